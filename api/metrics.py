"""Prometheus metrics: request counts and latency by route and status, requests in
flight, and open live streams.

Routes are labelled by their template (``/v1/rides/{ride_id}``), never the raw path, so
ids cannot blow up the label set; requests that match no route share ``unmatched``.
Latency is measured to the response's first byte (the status line), which for a live
stream is how long it took to open, not how long it stayed open.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fastapi import FastAPI, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.openapi import documented_path


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    in_flight: Gauge
    streams_open: Gauge

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
            in_flight=Gauge("ridehail_http_requests_in_flight", "HTTP requests being answered",
                            registry=registry),
            streams_open=Gauge("ridehail_sse_streams_open", "Server-Sent Event streams open",
                               ["stream"], registry=registry),
        )


def _route_of(scope: Scope) -> str:
    route = scope.get("route")  # set by the router once it has matched
    if route is not None:
        return str(getattr(route, "path", "unmatched"))
    # answered before routing (a 413): label it with the route it was meant for
    documented = documented_path(scope["app"], scope["path"]) if "app" in scope else None
    return documented[0] if documented else "unmatched"


class MetricsMiddleware:
    """Pure ASGI middleware, outermost, so it also counts 413s and 500s."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
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
            labels = (scope["method"], _route_of(scope), str(status))
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
    async def prometheus_metrics() -> Response:
        """Request counts and latency by route and status, in the Prometheus text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
