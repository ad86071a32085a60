"""The long-running parts of ridehail, each runnable alone or all together.

``ridehail api`` / ``worker`` / ``consumers`` / ``relay`` run one each; ``ridehail dev``
runs all of them in one process beside the embedded servers. Each runs until its
``stop`` event is set, then finishes what it is doing and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import uvicorn
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from temporalio.client import Client

from events.consumer import ConsumerRunner, ConsumerSpec
from events.consumers.notifier import Notifier
from events.consumers.projectors import Projectors
from events.consumers.trigger import WorkflowTrigger
from events.fitcheck import require_fit
from events.health import ConsumerHealth
from events.outbox import Outbox
from infra.config import Settings
from infra.connections import connect_nats, connect_temporal
from infra.telemetry import setup_tracing
from ridehail.processes.processmetrics import (
    ProcessMetrics,
    serve_metrics,
    temporal_metrics_runtime,
)
from ridehail.processes.temporalcheck import prepare_temporal
from ridehail.processes.worker import build_worker, run_worker, schedule_housekeeping
from store.db import Database
from store.migrate import prepare_schema

log = logging.getLogger(__name__)

CONSUMERS = ("workflow-trigger", "ride-projector", "driver-projector", "notifier")
# The setting naming each process's metrics port ("dev": ridehail dev's own process, with
# the consumers and the relay; the API serves /metrics on its own port)
METRICS_PORT = {"worker": "worker_metrics_port", "consumers": "consumers_metrics_port",
                "relay": "relay_metrics_port", "dev": "consumers_metrics_port"}


@dataclass
class Runtime:
    """A process's connections, made once and shared by its components."""

    settings: Settings
    db: Database
    nc: NATS
    js: JetStreamContext
    outbox: Outbox
    temporal: Client | None
    # which of this process's consumers are held up by a failing dependency
    consumer_health: ConsumerHealth = field(default_factory=ConsumerHealth)


@contextlib.asynccontextmanager
async def runtime(settings: Settings, name: str, *, temporal: bool = True,
                  prepare: bool = True) -> AsyncIterator[Runtime]:
    """Connect to everything and fit-check the servers (NATS: streams and consumers
    created or updated in place where they differ, ``NatsUnfit`` where they cannot be;
    Temporal: namespace and search attributes, ``TemporalUnfit``); with ``prepare``,
    create or migrate the tables too."""
    if prepare:
        await asyncio.to_thread(prepare_schema, settings.db_url)
    db = Database(settings.db_url)
    nc = await connect_nats(settings, name)
    js = nc.jetstream()
    try:
        await require_fit(nc, js, replicas=settings.stream_replicas,
                          keep_s=settings.stream_keep_s,
                          notification_keep_s=settings.notification_keep_s)
        client = await connect_temporal(settings) if temporal else None
        if client is not None:
            await prepare_temporal(client, settings.temporal_namespace,
                                   settings.temporal_address)
        outbox = Outbox(db, js, nc)
        try:
            yield Runtime(settings, db, nc, js, outbox, client)
        finally:
            await outbox.flush()
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()
        db.dispose()


def observe(settings: Settings, name: str) -> str | None:
    """Before a process connects to anything: tracing from the OTEL_* variables; for a
    worker that serves metrics, the Temporal runtime that exposes the SDK's (returns the
    URL it reads them from)."""
    setup_tracing(name)
    if name == "worker" and settings.worker_metrics_port is not None:
        return temporal_metrics_runtime()
    return None


@contextlib.asynccontextmanager
async def metrics_served(rt: Runtime, name: str, temporal_url: str | None = None
                         ) -> AsyncIterator[str | None]:
    """Serve the process's /metrics while inside, if its port is set; yields the URL."""
    port = getattr(rt.settings, METRICS_PORT[name], None) if name in METRICS_PORT else None
    if port is None:
        yield None
        return
    metrics = ProcessMetrics(rt.js, rt.outbox, rt.consumer_health,
                             consumers=name in ("consumers", "dev"),
                             relay=name in ("relay", "dev"),
                             rides=name in ("worker", "dev"),
                             housekeeping=name == "worker", temporal_url=temporal_url)
    urls: list[str] = []
    done = asyncio.Event()
    serving = asyncio.create_task(serve_metrics(metrics, rt.settings.metrics_host, port, done,
                                                urls.append))
    try:
        while not urls:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.02)
        yield urls[0]
    finally:
        done.set()
        await serving


def consumer_specs(rt: Runtime, names: Iterator[str] | tuple[str, ...] = CONSUMERS
                   ) -> list[ConsumerSpec]:
    wanted = set(names)
    unknown = wanted - set(CONSUMERS)
    if unknown:
        raise ValueError(f"unknown consumer(s) {sorted(unknown)}; known: {', '.join(CONSUMERS)}")
    specs: list[ConsumerSpec] = []
    if "workflow-trigger" in wanted:
        assert rt.temporal is not None
        trigger = WorkflowTrigger(rt.temporal, rt.settings, rt.db, rt.consumer_health)
        specs.append(trigger.spec())
    specs += [s for s in Projectors(rt.db).specs() if s.name in wanted]
    if "notifier" in wanted:
        specs.append(Notifier(rt.outbox).spec())
    return specs


async def run_consumers(rt: Runtime, stop: asyncio.Event,
                        names: tuple[str, ...] = CONSUMERS) -> None:
    runners = [ConsumerRunner(rt.js, spec, rt.consumer_health)
               for spec in consumer_specs(rt, names)]
    await asyncio.gather(*(r.run(stop) for r in runners))


async def run_relay(rt: Runtime, stop: asyncio.Event) -> None:
    await rt.outbox.relay(stop)


async def run_temporal_worker(rt: Runtime, stop: asyncio.Event) -> None:
    """The Temporal worker, with housekeeping scheduled (``ridehail worker``, and the
    worker process ``ridehail dev`` runs)."""
    assert rt.temporal is not None
    worker = build_worker(rt.temporal, rt.db, rt.outbox, rt.settings)
    await schedule_housekeeping(rt.temporal, rt.settings.prune_every_s)
    await run_worker(worker, stop)


async def run_logged(name: str, component: Callable[[], Awaitable[None]],
                     stop: asyncio.Event) -> None:
    """Run one component, logging that it started, is stopping and stopped (INFO: -v)."""
    log.info("%s started", name)

    async def stopping() -> None:
        await stop.wait()
        log.info("%s stopping", name)

    said = asyncio.create_task(stopping())
    try:
        await component()
    finally:
        said.cancel()
        log.info("%s stopped", name)


class _Server(uvicorn.Server):
    """Uvicorn without its own signal handling: the process entry point owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_api(rt: Runtime, stop: asyncio.Event) -> None:
    from api.app import close_streams, create_app
    from api.headers import CappedHeadersProtocol
    from api.services import Services

    services = Services(rt.settings, rt.db, rt.nc, rt.js, rt.outbox, rt.temporal,
                        rt.consumer_health)
    app = create_app(rt.settings, services)
    # uvicorn's loggers go through the process's logging set-up (infra.logs): with -v
    # its access log, one line a request; otherwise its warnings only
    verbose = logging.getLogger().isEnabledFor(logging.INFO)
    config = uvicorn.Config(app, host=rt.settings.api_host, port=rt.settings.api_port,
                            http=CappedHeadersProtocol,  # 431 for oversized headers
                            log_config=None, log_level="info" if verbose else "warning",
                            access_log=verbose, lifespan="on", timeout_graceful_shutdown=10)
    server = _Server(config)
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    close_streams(app)  # live streams never end by themselves; don't wait out the timeout
    server.should_exit = True
    stopping.cancel()
    await serving
    if not server.started and serving in done:
        raise RuntimeError(f"the API could not listen on {rt.settings.api_url}")
