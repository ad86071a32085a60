"""Trace context across the event backbone, so one ride is one trace.

An event carries the context it was created in as the CloudEvents distributed-tracing
extension (envelope attributes ``traceparent`` and ``tracestate``, beside ``id`` and
``type``; never in ``data``), stored with it in the outbox, so a relay that publishes it
later still joins it to its ride. Publishing puts the publish span's context in the NATS
headers too; a consumer's handling continues from the headers, else from the event.

Spans follow OpenTelemetry's messaging conventions (``messaging.system = "nats"``,
``messaging.destination.name`` = the subject, ``messaging.operation.type`` ``create`` /
``publish`` / ``process``, ``messaging.message.id`` = the event id). A ride's events
written outside its trace (a driver's later request) are created in the ride's trace,
found from its first event, and the request's span links to it, so the trip reads as
one story.

Everything here is called only when ``tracing_on()``: without tracing no span, header or
lookup is made.
"""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy import select
from sqlmodel import Session, col

from events.envelope import CloudEvent
from infra.telemetry import tracing_on
from store.tables import OutboxEvent

__all__ = ["RideTraces", "event_context", "messaging_attributes", "process_span",
           "publish_span", "stamp", "tracing_on"]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACER = "ridehail.events"
_W3C = TraceContextTextMapPropagator()
# Ride ids whose trace a process remembers (the first event of each, looked up once).
ORIGINS_KEPT = 10_000


def _tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER)


def messaging_attributes(event_id: str, event_type: str, subject: str, operation: str
                         ) -> dict[str, str]:
    attributes = {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.message.id": event_id,
        "cloudevents.event_id": event_id,
        "cloudevents.event_type": event_type,
    }
    if event_type.startswith("ride."):
        attributes["ridehail.ride_id"] = subject.split(".")[1]
    return attributes


def _carrier(event: CloudEvent) -> dict[str, str]:
    extra = event.__pydantic_extra__ or {}
    return {k: str(extra[k]) for k in (TRACEPARENT, TRACESTATE) if extra.get(k)}


def event_context(event: CloudEvent) -> Context | None:
    """The context an event was created in (its ``traceparent``), if it carries one."""
    carrier = _carrier(event)
    return _W3C.extract(carrier) if carrier else None


def _origin_of(body: str) -> trace.SpanContext | None:
    carrier = {k: v for k, v in json.loads(body).items() if k in (TRACEPARENT, TRACESTATE)}
    if not carrier:
        return None
    context = trace.get_current_span(_W3C.extract(carrier)).get_span_context()
    return context if context.is_valid else None


class RideTraces:
    """Which trace each ride is (the context of its first event), looked up in the outbox
    once and remembered; one per process, held by its outbox."""

    def __init__(self) -> None:
        self._origins: OrderedDict[str, trace.SpanContext | None] = OrderedDict()

    def origin(self, session: Session, ride_id: str) -> trace.SpanContext | None:
        if ride_id in self._origins:
            self._origins.move_to_end(ride_id)
            return self._origins[ride_id]
        body = session.connection().execute(
            select(col(OutboxEvent.body)).where(col(OutboxEvent.aggregate_id) == ride_id)
            .order_by(col(OutboxEvent.position)).limit(1)).scalar()
        found = _origin_of(body) if body else None
        self._origins[ride_id] = found  # None: a ride requested while tracing was off
        if len(self._origins) > ORIGINS_KEPT:
            self._origins.popitem(last=False)
        return found


def stamp(session: Session, events: Sequence[CloudEvent], rides: RideTraces) -> None:
    """Give each event a ``create`` span and its context (``traceparent``/``tracestate``).
    A ride's event written in another trace than the ride's is created in the ride's,
    linked to the span writing it, and that span links to the ride."""
    current = trace.get_current_span()
    here = current.get_span_context()
    for event in events:
        parent: Context | None = None
        links: list[Link] = []
        if event.type.startswith("ride.") and event.type != "ride.requested":
            origin = rides.origin(session, event.subject)
            if origin is not None and origin.trace_id != here.trace_id:
                parent = trace.set_span_in_context(trace.NonRecordingSpan(origin))
                links = [Link(here)] if here.is_valid else []
                current.add_link(origin, {"ridehail.link": "ride"})
        with _tracer().start_as_current_span(
            f"create {event.type}", context=parent, kind=SpanKind.PRODUCER, links=links,
            attributes=messaging_attributes(event.id, event.type, event.nats_subject,
                                            "create"),
        ):
            carrier: dict[str, str] = {}
            _W3C.inject(carrier)
        for key, value in carrier.items():
            setattr(event, key, value)


@contextlib.contextmanager
def publish_span(subject: str, body: bytes, event_id: str) -> Iterator[dict[str, str]]:
    """A ``publish`` span for one outbox row, in the trace its event was created in;
    yields the NATS headers that carry it."""
    doc = json.loads(body)
    carrier = {k: str(doc[k]) for k in (TRACEPARENT, TRACESTATE) if doc.get(k)}
    parent = _W3C.extract(carrier) if carrier else None
    event_type = str(doc.get("type", ""))
    with _tracer().start_as_current_span(
        f"publish {event_type}", context=parent, kind=SpanKind.PRODUCER,
        attributes=messaging_attributes(event_id, event_type, subject, "publish"),
    ):
        headers: dict[str, str] = {}
        _W3C.inject(headers)
        yield headers


@contextlib.contextmanager
def process_span(event: CloudEvent, subject: str, consumer: str,
                 headers: Mapping[str, str] | None) -> Iterator[trace.Span]:
    """A consumer's ``process`` span for one event, continuing the trace of the publish
    (NATS headers) or, without them, of the event's creation."""
    carrier = {k: headers[k] for k in (TRACEPARENT, TRACESTATE) if headers and k in headers}
    parent = _W3C.extract(carrier) if carrier else event_context(event)
    attributes = messaging_attributes(event.id, event.type, subject, "process")
    attributes["messaging.consumer.group.name"] = consumer
    with _tracer().start_as_current_span(
        f"process {event.type}", context=parent, kind=SpanKind.CONSUMER,
        attributes=attributes, record_exception=True, set_status_on_exception=True,
    ) as span:
        yield span
