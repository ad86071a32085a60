"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI

from api import admin, drivers, health, problems, quotes, rides
from api.docs import install_docs
from api.headers import HeaderSizeLimit
from api.limits import BodySizeLimit
from api.metrics import MetricsMiddleware, install_metrics
from api.openapi import install_openapi
from api.ratelimit import RateLimit
from api.services import Services
from api.streams import Streams
from events.outbox import Outbox
from infra.config import Settings
from infra.connections import connect_nats, connect_temporal
from infra.telemetry import tracing_on
from store.db import Database

DESCRIPTION = """\
Book rides and drive them.

**Auth.** Every `/v1` call needs `Authorization: Bearer <token>`: an HS256 JWT with the
claims `sub` (your rider or driver id), `role` (`rider`, `driver` or `admin`) and `exp`.
Get one with `ridehail token --role rider|driver|admin --sub ID`, then use **Authorize**
above.

**Errors** are `application/problem+json` (RFC 9457): 401 no or bad token, 403 wrong role,
404 unknown or not yours, 409 not allowed in the ride's current state, 413 body too large,
422 invalid input (`errors` names the fields), 429 too many requests (wait `Retry-After`
seconds), 503 a dependency is down (retry).

**Money** is a decimal string (`"12.40"`) with a `currency`; **coordinates** are
`{"lat", "lng"}` in degrees. Reads come from the read model and are eventually
consistent. `GET /v1/rides/{ride_id}/events` and `GET /v1/drivers/me/offers` are also
live streams with `Accept: text/event-stream`.
"""

TAGS = [
    {"name": "rides", "description": "Quotes, ride requests, reading and steering rides"},
    {"name": "drivers", "description": "The driver app: profile, availability, offers"},
    {"name": "admin", "description": "Operators: the dead-letter queue"},
    {"name": "operations", "description": "Health, readiness and metrics (no token)"},
]


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The API. Given ``services``, it uses them (tests, ``ridehail dev``); otherwise it
    connects to the database, NATS and Temporal itself when it starts."""
    settings.require_jwt_secret()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            app.state.services = services
            app.state.streams = Streams(services.db, services.nc, services.js, metrics,
                                        settings.sse_streams_per_subject)
            try:
                yield
            finally:
                await app.state.streams.aclose()
            return
        db = Database(settings.db_url)
        nc = await connect_nats(settings, "api")
        js = nc.jetstream()
        temporal = await connect_temporal(settings)
        app.state.services = Services(settings, db, nc, js, Outbox(db, js, nc), temporal)
        app.state.streams = Streams(db, nc, js, metrics, settings.sse_streams_per_subject)
        try:
            yield
        finally:
            await app.state.streams.aclose()
            await app.state.services.outbox.flush()
            await nc.drain()
            db.dispose()

    app = FastAPI(title="ridehail", version=version("ridehail"), description=DESCRIPTION,
                  openapi_tags=TAGS, lifespan=lifespan,
                  # served from installed assets, not a CDN (api.docs)
                  docs_url=None, redoc_url=None,
                  # operation ids are the handlers' names (get_ride, request_ride, ...):
                  # what generated clients and the links between operations refer to
                  generate_unique_id_function=lambda route: route.name)
    problems.install(app)
    install_openapi(app)
    install_docs(app)
    metrics = install_metrics(app)
    for module in (quotes, rides, drivers, admin, health):
        app.include_router(module.router)
    # Added last = outermost: metrics see every answer, the 413s, 429s and 431s included.
    app.add_middleware(RateLimit)
    app.add_middleware(BodySizeLimit)
    app.add_middleware(HeaderSizeLimit)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if tracing_on():  # a span per request (docs/DEPLOY.md, "Observing it"); nothing when off
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="/healthz,/readyz,/metrics")
    return app


def close_streams(app: FastAPI) -> None:
    """End the app's open live streams: call as the server begins to shut down, or it
    waits for their clients (who never finish on their own) until its graceful timeout."""
    streams: Streams | None = getattr(app.state, "streams", None)
    if streams is not None:
        streams.close()
