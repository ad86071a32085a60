"""What the API's routes use, built once per process by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from temporalio.client import Client

from events.health import ConsumerHealth
from events.outbox import Outbox
from infra.config import Settings
from store.db import Database


@dataclass
class Services:
    settings: Settings
    db: Database
    nc: NATS
    js: JetStreamContext
    outbox: Outbox
    temporal: Client | None = None
    # the consumers running in this process (ridehail dev), if any
    consumer_health: ConsumerHealth | None = None


async def get_services(request: Request) -> Services:
    # a coroutine, so FastAPI calls it on the loop instead of on a worker thread
    services: Services = request.app.state.services
    return services


Deps = Annotated[Services, Depends(get_services)]
