"""``/metrics`` for the processes other than the API: the worker, the consumers, the relay
(and ``ridehail dev``'s own process), each on the port its setting names
(``RIDEHAIL_WORKER_METRICS_PORT`` …; 0 = a free port).

What a process serves depends on what it runs: the consumers their events handled,
failed and dead-lettered per group, how long a group has been blocked, consumer lag and
DLQ depth; the relay how long the oldest unpublished outbox event has waited; the worker
the ride outcomes, time to a driver and money captured its activities wrote
(``events.ridemetrics``) and the rows housekeeping removed (``activities.housekeeping``),
followed by the Temporal SDK's own metrics (workflow task latency, activity failures,
schedule-to-start …), which the SDK serves on a private loopback port that only this
endpoint reads. Lag, DLQ depth and outbox age are read when scraped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import httpx
import uvicorn
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from activities.housekeeping import PRUNE_METRICS
from events.dlq import dlq_depth
from events.health import ConsumerHealth
from events.lag import consumer_lag
from events.outbox import Outbox
from events.topology import CONSUMER_GROUPS

log = logging.getLogger(__name__)
READ_TIMEOUT_S = 2.0


class _ConsumerCounts:
    """The consumer groups' handled / failed / dead-lettered counts, and the api events
    that came after their ride's workflow had closed, as counters."""

    def __init__(self, health: ConsumerHealth) -> None:
        self.health = health

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "ridehail_consumer_events", "Events a consumer group of this process handled, "
            "failed (to be retried) or dead-lettered", labels=["consumer", "outcome"])
        for (group, outcome), n in sorted(self.health.counts().items()):
            family.add_metric([group, outcome], n)
        yield family
        late = CounterMetricFamily(
            "ridehail_events_for_closed_rides", "Api events the workflow-trigger of this "
            "process found their ride's workflow closed for (recorded, not applied)",
            labels=["type"])
        for event_type, n in sorted(self.health.late_events().items()):
            late.add_metric([event_type], n)
        yield late


@dataclass
class ProcessMetrics:
    """One process's metrics: ``consumers`` adds the consumer groups' figures, ``relay``
    the outbox's, ``rides`` the ride metrics its outbox counted, ``housekeeping`` what its
    housekeeping removed, ``temporal_url`` the Temporal SDK's exposition."""

    js: JetStreamContext
    outbox: Outbox
    health: ConsumerHealth
    consumers: bool = False
    relay: bool = False
    rides: bool = False
    housekeeping: bool = False
    temporal_url: str | None = None

    def __post_init__(self) -> None:
        self.registry = CollectorRegistry()
        if self.consumers:
            self.registry.register(_ConsumerCounts(self.health))
            self.blocked = Gauge("ridehail_consumer_blocked_seconds",
                                 "How long a consumer group of this process has been held up "
                                 "by a failing dependency (0: not blocked)", ["consumer"],
                                 registry=self.registry)
            self.pending = Gauge("ridehail_consumer_pending",
                                 "Events not yet delivered to a consumer group", ["consumer"],
                                 registry=self.registry)
            self.ack_pending = Gauge("ridehail_consumer_ack_pending",
                                     "Events delivered to a consumer group, not yet acked",
                                     ["consumer"], registry=self.registry)
            self.dlq = Gauge("ridehail_dlq_depth", "Dead-lettered events on the DLQ stream",
                             registry=self.registry)
        if self.relay:
            self.outbox_age = Gauge("ridehail_outbox_oldest_unpublished_seconds",
                                    "How long the oldest event not yet published has waited",
                                    registry=self.registry)

    async def _refresh(self) -> None:
        if self.consumers:
            blocked = self.health.by_group()
            for group in CONSUMER_GROUPS:
                self.blocked.labels(group.name).set(blocked.get(group.name, 0.0))
            for name, lag in (await consumer_lag(self.js)).items():
                self.pending.labels(name).set(lag.pending)
                self.ack_pending.labels(name).set(lag.ack_pending)
            self.dlq.set(await dlq_depth(self.js))
        if self.relay:
            self.outbox_age.set(await self.outbox.oldest_unpublished_s())

    async def exposition(self) -> bytes:
        try:
            await asyncio.wait_for(self._refresh(), READ_TIMEOUT_S)
        except Exception:  # serve what we have; the log says why
            log.warning("metrics: could not read lag, DLQ or outbox age", exc_info=True)
        text = generate_latest(self.registry)
        if self.rides:
            text += generate_latest(self.outbox.ride_metrics.registry)
        if self.housekeeping:
            text += generate_latest(PRUNE_METRICS.registry)
        if self.temporal_url:
            try:
                async with httpx.AsyncClient(timeout=READ_TIMEOUT_S) as http:
                    text += (await http.get(self.temporal_url)).content
            except httpx.HTTPError as e:
                log.warning("metrics: the Temporal SDK's metrics did not answer: %s", e)
        return text


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def temporal_metrics_runtime() -> str:
    """Make the process's Temporal runtime serve the SDK's metrics on a free loopback
    port (before any Temporal client exists: one runtime per process); returns the URL."""
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    port = free_port()
    Runtime.set_default(Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(
        bind_address=f"127.0.0.1:{port}", durations_as_seconds=True))))
    return f"http://127.0.0.1:{port}/metrics"


class _Server(uvicorn.Server):
    """No signal handling of its own: the process entry point owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_metrics(metrics: ProcessMetrics, host: str, port: int,
                        stop: asyncio.Event, listening: Callable[[str], None]) -> None:
    """Serve ``GET /metrics`` until ``stop``; ``listening`` gets its URL once it listens."""

    async def endpoint(request: Request) -> Response:
        return Response(await metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(routes=[Route("/metrics", endpoint)])
    server = _Server(uvicorn.Config(app, host=host, port=port, log_config=None,
                                    log_level="warning", access_log=False, lifespan="off"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
            raise RuntimeError(f"metrics: could not listen on {host}:{port}")
        await asyncio.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    listening(f"http://{host}:{bound}/metrics")
    try:
        await stop.wait()
    finally:
        server.should_exit = True
        await serving
