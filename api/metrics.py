"""Prometheus metrics: request counts and latency by route and status, requests in
flight, and open live streams.

Routes are labelled by their template (``/v1/rides/{ride_id}``), never the raw path, so
ids cannot blow up the label set. Requests that match no route are counted apart, by
status only (``ridehail_http_unmatched_requests``: a scanner's guesses and its made-up
methods create no label values), and the interactive docs (``/docs``, ``/redoc``,
``/openapi.json`` and their assets) are not counted at all.
Latency is measured to the response's first byte (the status line), which for a live
stream is how long it took to open, not how long it stayed open.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from fastapi import FastAPI, Request, Response
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.docs import is_docs_path
from api.paths import documented_path
from events.dlq import dlq_depth
from events.health import ConsumerHealth
from events.lag import consumer_lag
from events.topology import CONSUMER_GROUPS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    unmatched: Counter
    in_flight: Gauge
    streams_open: Gauge
    consumer_pending: Gauge
    consumer_ack_pending: Gauge
    dlq_depth: Gauge
    consumer_blocked: Gauge
    late_events: Counter
    late_seen: dict[str, int] = field(default_factory=dict)  # counted into late_events

    @classmethod
    def create(cls) -> Metrics:
        # A registry per app, not the process-global one: tests and `ridehail dev` may
        # build several apps in one process.
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter("ridehail_http_requests", "HTTP requests answered",
                             ["method", "route", "status"], registry=registry),
            latency=Histogram("ridehail_http_request_duration_seconds",
                              "Time to the response status, by route and status",
                              ["method", "route", "status"], registry=registry,
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                       10)),
            unmatched=Counter("ridehail_http_unmatched_requests",
                              "HTTP requests that matched no route, by status",
                              ["status"], registry=registry),
            in_flight=Gauge("ridehail_http_requests_in_flight", "HTTP requests being answered",
                            registry=registry),
            streams_open=Gauge("ridehail_sse_streams_open", "Server-Sent Event streams open",
                               ["stream"], registry=registry),
            consumer_pending=Gauge("ridehail_consumer_pending",
                                   "Events not yet delivered to a consumer group",
                                   ["consumer"], registry=registry),
            consumer_ack_pending=Gauge("ridehail_consumer_ack_pending",
                                       "Events delivered to a consumer group, not yet acked",
                                       ["consumer"], registry=registry),
            dlq_depth=Gauge("ridehail_dlq_depth", "Dead-lettered events on the DLQ stream",
                            registry=registry),
            consumer_blocked=Gauge(
                "ridehail_consumer_blocked_seconds",
                "How long a consumer group of this process has been held up by a failing "
                "dependency (0: not blocked)", ["consumer"], registry=registry),
            late_events=Counter(
                "ridehail_events_for_closed_rides",
                "Api events the workflow-trigger of this process found their ride's workflow "
                "closed for (recorded, not applied)", ["type"], registry=registry),
        )

    def refresh_blocked(self, health: ConsumerHealth) -> None:
        blocked = health.by_group()
        for group in CONSUMER_GROUPS:
            self.consumer_blocked.labels(group.name).set(blocked.get(group.name, 0.0))
        for event_type, count in health.late_events().items():
            new = count - self.late_seen.get(event_type, 0)
            if new > 0:
                self.late_events.labels(event_type).inc(new)
                self.late_seen[event_type] = count

    async def refresh_backbone(self, js: JetStreamContext) -> None:
        """Consumer lag and DLQ depth, read from JetStream at scrape time."""
        for group, lag in (await consumer_lag(js)).items():
            self.consumer_pending.labels(group).set(lag.pending)
            self.consumer_ack_pending.labels(group).set(lag.ack_pending)
        self.dlq_depth.set(await dlq_depth(js))


def _route_of(scope: Scope) -> str | None:
    """The route template the request was for, or None when it matched no route."""
    route = scope.get("route")  # set by the router once it has matched
    if route is not None and getattr(route, "path", None):
        return str(route.path)
    # answered before routing (a 413): label it with the route it was meant for
    documented = documented_path(scope["app"], scope["path"]) if "app" in scope else None
    return documented[0] if documented else None


class MetricsMiddleware:
    """Pure ASGI middleware, outermost, so it also counts 413s and 500s."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_docs_path(scope.get("app"), scope["path"]):
            await self.app(scope, receive, send)
            return
        m = self.metrics
        start = time.perf_counter()
        recorded = False

        def record(status: int) -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            route = _route_of(scope)
            if route is None:
                m.unmatched.labels(str(status)).inc()
                return
            labels = (scope["method"], route, str(status))
            m.requests.labels(*labels).inc()
            m.latency.labels(*labels).observe(time.perf_counter() - start)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                record(int(message["status"]))
            await send(message)

        m.in_flight.inc()
        try:
            await self.app(scope, receive, sending)
        except Exception:
            record(500)  # the server answers 500 when the app raises before responding
            raise
        finally:
            m.in_flight.dec()


def install_metrics(app: FastAPI) -> Metrics:
    metrics = Metrics.create()
    app.state.metrics = metrics

    @app.get("/metrics", tags=["operations"], response_class=Response,
             responses={200: {"description": "Prometheus text exposition",
                              "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}})
    async def prometheus_metrics(request: Request) -> Response:
        """Request counts and latency by route and status, consumer lag and DLQ depth, in
        the Prometheus text format."""
        services = getattr(request.app.state, "services", None)
        if services is not None and services.consumer_health is not None:
            metrics.refresh_blocked(services.consumer_health)
        if services is not None:
            try:
                await asyncio.wait_for(metrics.refresh_backbone(services.js), 2)
            except Exception:
                log.warning("metrics: could not read consumer lag from NATS", exc_info=True)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
