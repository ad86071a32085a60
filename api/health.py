"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from api.auth import verify
from api.problems import Problem, error_responses, problem_response
from api.services import Deps

router = APIRouter(tags=["operations"])

# Each dependency gets this long to answer; they are asked at once, so /readyz answers
# within about this long even when everything is down.
CHECK_TIMEOUT_S = 3.0


class Health(BaseModel):
    status: str = Field(examples=["ready"])
    checks: dict[str, str] = Field(
        default={}, description="Each dependency (database, nats, temporal): `ok`, or why not")


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up (liveness: restart it if this fails)."""
    return Health(status="ok")


def _is_admin(request: Request) -> bool:
    """The caller showed a valid admin token (any other token counts as none here; the
    route is documented as needing none)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    try:
        settings = request.app.state.services.settings
        return verify(token.strip(), settings.require_jwt_secret(),
                      settings.jwt_max_ttl_s).role == "admin"
    except Problem:
        return False


def _status_only(checks: dict[str, str]) -> dict[str, str]:
    """What anyone may see: each check's status, not the error texts behind it."""
    return {name: value if value == "ok" else
            ("blocked" if name == "consumers" else "unavailable")
            for name, value in checks.items()}


@router.get("/readyz", response_model=Health, responses=error_responses(503))
async def readyz(svc: Deps, request: Request) -> Health | JSONResponse:
    """The database, NATS (with JetStream) and Temporal are reachable (readiness: send
    traffic only while this is 200). A 503 names the ones that are not, in `detail` and
    in `checks`. Where the event consumers run in this process, `checks.consumers` says
    whether any is blocked by a failing dependency. Without a token each check is just
    `ok`, `unavailable` or `blocked`; an admin's token also gets why (the errors, and
    which consumers are blocked since when)."""

    async def database() -> None:
        await svc.db.read(lambda s: s.connection().execute(text("SELECT 1")).one())

    async def nats() -> None:
        # is_connected is False while the client is reconnecting: the server is gone
        if not svc.nc.is_connected:
            raise ConnectionError("not connected")
        await svc.js.account_info()  # a JetStream round trip, not just a TCP ping

    async def temporal() -> None:
        if svc.temporal is None:
            raise ConnectionError("no client")
        await svc.temporal.service_client.check_health()

    async def check(probe: Callable[[], Awaitable[None]]) -> str:
        try:
            await asyncio.wait_for(probe(), CHECK_TIMEOUT_S)
        except TimeoutError:
            return f"unavailable: no answer within {CHECK_TIMEOUT_S:.0f}s"
        except Exception as e:  # noqa: BLE001 — any failure means not ready
            return f"unavailable: {type(e).__name__}: {e}"[:300]
        return "ok"

    names = ("database", "nats", "temporal")
    results = await asyncio.gather(check(database), check(nats), check(temporal))
    checks = dict(zip(names, results, strict=True))
    down = [n for n, v in checks.items() if v != "ok"]
    if svc.consumer_health is not None:
        # consumers held up by a dependency: reported, but the API itself still serves
        # (its writes wait in the outbox and the streams until they catch up)
        blocked = svc.consumer_health.summary()
        checks["consumers"] = "ok" if blocked is None else blocked[:1000]
    if not _is_admin(request):
        checks = _status_only(checks)
    if down:
        return problem_response(503, f"Not ready: {', '.join(down)} unavailable", checks=checks)
    return Health(status="ready", checks=checks)
