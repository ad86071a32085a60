"""Liveness, readiness and metrics. Readiness is 503 naming the dependency that is down
— database, NATS or Temporal — each shown with a real one taken away: a database address
nothing listens on, a nats-server stopped under the connection, a Temporal address
nothing listens on."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import nats
from nats.aio.client import Client as NATS
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from api.app import create_app
from api.services import Services
from events.outbox import Outbox
from infra.config import Settings
from infra.connections import connect_temporal
from store.db import Database
from tests.support.servers import RestartableNats, free_port
from tests.support.stack import Stack, eventually

PROBLEM = "application/problem+json"


@contextlib.asynccontextmanager
async def app_with(settings: Settings, db: Database, nc: NATS,
                   temporal: Client | None) -> AsyncIterator[httpx.AsyncClient]:
    """The API in-process over the given connections (no server: ASGI in memory)."""
    js = nc.jetstream()
    app = create_app(settings, Services(settings, db, nc, js, Outbox(db, js, nc), temporal))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            yield http


async def not_ready(http: httpx.AsyncClient, down: str) -> None:
    r = await http.get("/readyz")
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["detail"] == f"Not ready: {down} unavailable", body
    assert body["checks"][down].startswith("unavailable")
    assert {k for k, v in body["checks"].items() if v != "ok"} == {down}, body


async def test_live_and_ready(api: Stack) -> None:
    r = await api.http.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = await api.http.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "checks": {
        "database": "ok", "nats": "ok", "temporal": "ok", "consumers": "ok"}}


async def test_database_down(servers: Settings) -> None:
    # a PostgreSQL address nothing listens on: the engine is made, connecting fails
    db = Database(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone"
                  "?connect_timeout=2")
    nc = await nats.connect(servers.nats_url)
    temporal = await connect_temporal(servers)
    try:
        async with app_with(servers, db, nc, temporal) as http:
            await not_ready(http, "database")
            # what needs the database is a 503 too, not a 500
            r = await http.get("/v1/rides", headers=_auth(servers))
            assert r.status_code == 503 and r.headers["retry-after"], r.text
            assert r.headers["content-type"].startswith(PROBLEM)
    finally:
        await nc.close()
        db.dispose()


async def test_nats_down(servers: Settings, own_nats: RestartableNats, tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'ready.db'}")
    db.create_tables()
    nc = await nats.connect(own_nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    temporal = await connect_temporal(servers)
    try:
        async with app_with(servers, db, nc, temporal) as http:
            assert (await http.get("/readyz")).status_code == 200
            own_nats.stop()

            async def disconnected() -> bool:
                return not nc.is_connected

            await eventually(disconnected, "the client to notice NATS is gone")
            await not_ready(http, "nats")
            await own_nats.restart()

            async def ready_again() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await eventually(ready_again, "readiness once NATS is back")
    finally:
        await nc.close()
        db.dispose()


async def test_temporal_down(servers: Settings, tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'ready.db'}")
    nc = await nats.connect(servers.nats_url)
    # lazy: made without connecting, as a client whose server went away would be
    temporal = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True,
                                    data_converter=pydantic_data_converter)
    try:
        async with app_with(servers, db, nc, temporal) as http:
            await not_ready(http, "temporal")
    finally:
        await nc.close()
        db.dispose()


def _auth(settings: Settings) -> dict[str, str]:
    from api.auth import issue_token

    return {"Authorization": f"Bearer {issue_token(settings.require_jwt_secret(), 'rider', 'ann')}"}


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 if absent."""
    wanted = {f'{k}="{v}"' for k, v in labels.items()}
    for line in metrics.splitlines():
        m = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if m and wanted <= set((m.group(1) or "").split(",")) - {""}:
            return float(m.group(2))
    return 0.0


async def test_metrics_count_requests_by_route_and_status(api: Stack) -> None:
    for _ in range(3):
        await api.call("GET", "/v1/rides/no-such-ride", "rider", "ann", want=404)
    await api.call("GET", "/v1/rides", "rider", "ann", want=200)
    await api.http.get("/v1/rides")  # 401
    for path in ("/nowhere", "/wp-admin.php", "/docs", "/redoc", "/openapi.json"):
        await api.http.get(path)
    await api.http.request("PROPFIND", "/elsewhere")
    r = await api.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    route = "/v1/rides/{ride_id}"  # the template, never the id
    assert sample(text, "ridehail_http_requests_total", method="GET", route=route,
                  status="404") == 3
    assert sample(text, "ridehail_http_requests_total", method="GET", route="/v1/rides",
                  status="200") == 1
    assert sample(text, "ridehail_http_requests_total", method="GET", route="/v1/rides",
                  status="401") == 1
    # the unmatched are counted by status alone; the docs not at all: every route label
    # is a template of the API's own
    assert sample(text, "ridehail_http_unmatched_requests_total", status="404") == 3
    routes = set(re.findall(r'route="([^"]*)"', text))
    documented = set((await api.http.get("/openapi.json")).json()["paths"])
    assert routes and routes <= documented, routes - documented
    assert sample(text, "ridehail_http_request_duration_seconds_count", method="GET",
                  route=route, status="404") == 3
    assert sample(text, "ridehail_http_request_duration_seconds_bucket", method="GET",
                  route=route, status="404", le="+Inf") == 3
    assert "no-such-ride" not in text
    assert sample(text, "ridehail_http_requests_in_flight") == 1  # this very request
