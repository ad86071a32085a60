"""The HTTP API: FastAPI app factory (``api.app.create_app``), routers by resource, auth
and problem responses."""
