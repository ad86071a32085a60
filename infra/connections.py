"""Connecting to NATS and Temporal the same way in every process."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from nats.aio.client import Client as NATS
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import TLSConfig

from infra.config import Settings, temporal_environment
from infra.telemetry import tracing_on

if TYPE_CHECKING:
    from temporalio.envconfig import ClientConnectConfig

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
        reconnect_time_wait=0.5,  # type: ignore[arg-type]  # nats-py: int; a float works
        connect_timeout=5,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error,
        **settings.nats_connect_options(),
    )
    return nc


def temporal_tls(settings: Settings, standard: ClientConnectConfig) -> bool | TLSConfig:
    """RIDEHAIL_TEMPORAL_TLS* when set, else what Temporal's environment says (TLS is on
    with an API key unless turned off)."""
    files = (settings.temporal_tls_ca, settings.temporal_tls_cert, settings.temporal_tls_key)
    if settings.temporal_tls is False:
        return False
    if any(files) or settings.temporal_tls_server_name:
        ca, cert, key = (f.read_bytes() if f else None for f in files)
        return TLSConfig(server_root_ca_cert=ca, client_cert=cert, client_private_key=key,
                         domain=settings.temporal_tls_server_name)
    if settings.temporal_tls:
        return True
    if "tls" in standard:
        return standard["tls"]
    return bool(settings.temporal_api_key)


async def connect_temporal(settings: Settings) -> Client:
    """A Temporal client with the data converter shared by worker, trigger and replayer.
    Address and namespace are the settings' (RIDEHAIL_*, else TEMPORAL_*); TLS, API key
    and gRPC metadata the RIDEHAIL_TEMPORAL_* ones where set, else Temporal's standard
    environment configuration's. With tracing on, the SDK's tracing interceptor carries
    the trace into the workflow and its activities (a worker built on this client gets
    it too); it adds headers only, never a workflow command."""
    standard = temporal_environment()
    interceptors = []
    if tracing_on():
        from temporalio.contrib.opentelemetry import TracingInterceptor

        interceptors.append(TracingInterceptor())
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=settings.temporal_api_key or standard.get("api_key"),
        tls=temporal_tls(settings, standard),
        rpc_metadata=standard.get("rpc_metadata") or {},
        data_converter=pydantic_data_converter,
        interceptors=interceptors,
    )
