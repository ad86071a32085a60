"""Trace context as CloudEvent extension attributes, and the log lines that carry the
ride and trace ids."""

from __future__ import annotations

import json
import logging

from domain.geo import Point
from events.catalog import RideRequested
from events.envelope import new_event, parse_event
from events.tracecontext import event_context, messaging_attributes
from infra.logs import JsonFormatter, TextFormatter, ride_context
from infra.telemetry import tracing_on
from tests.support.tracing import in_memory_tracing

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def requested() -> bytes:
    event = new_event("ride.requested", RideRequested(
        ride_id="r1", rider_id="alice", pickup=Point(lat=40.75, lng=-73.99),
        dropoff=Point(lat=40.76, lng=-73.97)), source="ridehail/api", subject="r1")
    return event.to_json()


def test_traceparent_is_an_envelope_attribute_that_round_trips_beside_the_payload() -> None:
    doc = json.loads(requested())
    doc.update(traceparent=TRACEPARENT, tracestate="ridehail=1")
    event = parse_event(json.dumps(doc).encode())
    assert "traceparent" not in event.data
    again = json.loads(event.to_json())
    assert again["traceparent"] == TRACEPARENT and again["tracestate"] == "ridehail=1"
    context = event_context(event)
    assert context is not None
    from opentelemetry import trace

    span = trace.get_current_span(context).get_span_context()
    assert format(span.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"


def test_an_event_without_trace_context_has_none() -> None:
    assert event_context(parse_event(requested())) is None


def test_messaging_attributes_follow_the_conventions() -> None:
    a = messaging_attributes("e1", "ride.requested", "rides.r1.requested", "publish")
    assert a["messaging.system"] == "nats"
    assert a["messaging.destination.name"] == "rides.r1.requested"
    assert a["messaging.operation.type"] == "publish" and a["messaging.message.id"] == "e1"
    assert a["ridehail.ride_id"] == "r1"


def record() -> logging.LogRecord:
    return logging.LogRecord("events.consumer", logging.WARNING, __file__, 1, "handled %s",
                             ("e1",), None)


def test_log_lines_carry_the_ride_of_the_work_in_hand_and_no_trace_when_off() -> None:
    assert not tracing_on()
    with ride_context("r-9"):
        doc = json.loads(JsonFormatter().format(record()))
        text = TextFormatter().format(record())
    assert doc["ride_id"] == "r-9" and "trace_id" not in doc
    assert text.endswith("handled e1 [ride=r-9]")
    assert "ride_id" not in json.loads(JsonFormatter().format(record()))


def test_log_lines_carry_the_trace_id_when_tracing_is_on() -> None:
    from opentelemetry import trace

    with in_memory_tracing(), trace.get_tracer("test").start_as_current_span("s") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        doc = json.loads(JsonFormatter().format(record()))
        text = TextFormatter().format(record())
    assert doc["trace_id"] == trace_id
    assert text.endswith(f"[trace={trace_id}]")


def test_tracing_is_on_only_with_an_endpoint_and_not_disabled(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from infra.telemetry import OtelSettings

    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                 "OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    assert not OtelSettings().tracing
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces")
    assert OtelSettings().tracing and OtelSettings().protocol == "http/protobuf"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert OtelSettings().protocol == "grpc"
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not OtelSettings().tracing
