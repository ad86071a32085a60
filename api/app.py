"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import drivers, health, problems, quotes, rides
from api.metrics import install_metrics
from api.services import Services
from events.outbox import Outbox
from ridehail.config import Settings
from ridehail.connections import connect_nats, connect_temporal
from ridehail.db import Database

DESCRIPTION = """\
Book rides and drive them. Every `/v1` call needs `Authorization: Bearer <token>`; get a
token with `ridehail token --role rider|driver|admin --sub ID`. Errors are
`application/problem+json`. Reads come from the read model and are eventually consistent.
"""


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The API. Given ``services``, it uses them (tests, ``ridehail dev``); otherwise it
    connects to the database, NATS and Temporal itself when it starts."""
    settings.require_jwt_secret()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            app.state.services = services
            yield
            return
        db = Database(settings.db_url)
        nc = await connect_nats(settings, "api")
        js = nc.jetstream()
        temporal = await connect_temporal(settings)
        app.state.services = Services(settings, db, nc, js, Outbox(db, js, nc), temporal)
        try:
            yield
        finally:
            await nc.drain()
            db.dispose()

    app = FastAPI(title="ridehail", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    problems.install(app)
    install_metrics(app)
    for module in (quotes, rides, drivers, health):
        app.include_router(module.router)
    return app
