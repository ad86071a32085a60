"""Connecting to NATS and Temporal the same way in every process."""

from __future__ import annotations

import logging

from nats.aio.client import Client as NATS
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from ridehail.config import Settings

log = logging.getLogger(__name__)


async def connect_nats(settings: Settings, name: str) -> NATS:
    """One connection per process; it reconnects forever and restores subscriptions."""

    nc = NATS()

    async def disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):  # not when we are the ones closing
            log.warning("%s: disconnected from NATS", name)

    async def reconnected() -> None:
        log.info("%s: reconnected to NATS", name)

    async def error(e: Exception) -> None:
        log.debug("%s: NATS error: %s", name, e)

    await nc.connect(
        servers=settings.nats_servers,
        name=f"ridehail-{name}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error,
    )
    return nc


async def connect_temporal(settings: Settings) -> Client:
    """A Temporal client with the data converter shared by worker, trigger and replayer."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
    )
