"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from api.problems import error_responses, problem_response
from api.services import Deps

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=error_responses(503))
async def readyz(svc: Deps) -> Health | JSONResponse:
    """The database, NATS and Temporal are reachable; 503 names the one that is not."""

    async def database() -> None:
        await svc.db.read(lambda s: s.exec(text("SELECT 1")).one())  # type: ignore[call-overload]

    async def nats() -> None:
        if not svc.nc.is_connected:
            raise ConnectionError("not connected")
        await svc.nc.flush(timeout=2)

    async def temporal() -> None:
        if svc.temporal is None:
            raise ConnectionError("no client")
        await svc.temporal.service_client.check_health()

    checks: dict[str, str] = {}
    for name, check in (("database", database), ("nats", nats), ("temporal", temporal)):
        try:
            await asyncio.wait_for(check(), 3)
            checks[name] = "ok"
        except Exception as e:  # noqa: BLE001 — any failure means not ready
            checks[name] = f"unavailable: {type(e).__name__}: {e}"
    down = [n for n, v in checks.items() if v != "ok"]
    if down:
        return problem_response(503, f"Not ready: {', '.join(down)} unavailable", checks=checks)
    return Health(status="ready", checks=checks)
