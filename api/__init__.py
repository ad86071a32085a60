"""The HTTP API: FastAPI app factory, routers by resource, auth and problem responses."""

from api.app import create_app

__all__ = ["create_app"]
