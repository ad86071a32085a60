"""One ride is one trace: the HTTP request, the events' create / publish / process spans
on NATS, the workflow and its activities, and the events the activities publish; the
driver's later requests link to it. In-process (API, consumers and worker in this
process), with the SDK's in-memory exporter."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from infra.config import Settings
from infra.telemetry import tracing_on
from tests.support.rides import accept, drive, driver_online, request_ride
from tests.support.stack import eventually, running_stack
from tests.support.tracing import in_memory_tracing, trace_hex

NEAR = {"lat": 40.7505, "lng": -73.9905}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with in_memory_tracing() as exporter:
        yield exporter


async def test_a_ride_is_one_trace_from_the_request_through_nats_and_temporal(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    assert tracing_on()
    async with running_stack(settings) as stack:
        await driver_online(stack, "d1", NEAR)
        ride_id = await request_ride(stack)
        await accept(stack, ride_id, "d1")
        await drive(stack, ride_id, "d1")

        def of_ride() -> list[ReadableSpan]:
            return [s for s in spans.get_finished_spans()
                    if (s.attributes or {}).get("ridehail.ride_id") == ride_id]

        # the notifier's handling of ride.completed is the last thing the ride causes
        async def told() -> bool:
            return any(s.name == "process ride.completed"
                       and s.attributes.get("messaging.consumer.group.name") == "notifier"
                       for s in of_ride())

        await eventually(told, "the notifier to process ride.completed")

    finished = spans.get_finished_spans()
    request = next(s for s in finished if s.kind == SpanKind.SERVER
                   and s.name == "POST /v1/rides")
    ride_trace = trace_hex(request)
    in_trace = [s for s in finished if trace_hex(s) == ride_trace]
    names = defaultdict(list)
    for s in in_trace:
        names[s.name].append(s)
    # the request wrote ride.requested through the outbox and published it on NATS
    for name in ("create ride.requested", "publish ride.requested"):
        assert names[name], sorted(names)
    published = names["publish ride.requested"][0]
    assert published.attributes["messaging.system"] == "nats"
    assert published.attributes["messaging.operation.type"] == "publish"
    assert published.attributes["messaging.destination.name"] == f"rides.{ride_id}.requested"
    assert published.attributes["messaging.message.id"]
    # every consumer group that handles it, in the same trace: the trigger acts on it;
    # the notifier's durable filters it out, as no one is told of a request
    groups = {s.attributes["messaging.consumer.group.name"]
              for s in names["process ride.requested"]}
    assert "workflow-trigger" in groups and "notifier" not in groups, groups
    told_assigned = {s.attributes["messaging.consumer.group.name"]
                     for s in names["process ride.driver_assigned"]}
    assert "notifier" in told_assigned and "workflow-trigger" not in told_assigned, \
        told_assigned
    # the trigger started the workflow; the worker ran it and its activities
    assert names["StartWorkflow:RideWorkflow"] and names["RunWorkflow:RideWorkflow"]
    activities = {n for n in names if n.startswith("RunActivity:")}
    assert {"RunActivity:quote_fare", "RunActivity:capture_payment",
            "RunActivity:complete_ride"} <= activities, sorted(names)
    # the activities' events, published and handled in the same trace
    for name in ("publish ride.driver_assigned", "process ride.completed",
                 "publish ride.completed"):
        assert names[name], sorted(names)
    # the driver's later reports are the ride's too, and their requests link to it
    assert names["create ride.trip_ended"] and names["SignalWorkflow:trip_ended"]
    assert names["HandleSignal:driver_accepted"]
    accept_request = next(s for s in finished if s.kind == SpanKind.SERVER
                          and s.name == "POST /v1/rides/{ride_id}/accept")
    assert trace_hex(accept_request) != ride_trace
    assert any(format(link.context.trace_id, "032x") == ride_trace
               for link in accept_request.links)


async def test_without_a_tracer_provider_events_carry_no_trace_context(
    settings: Settings,
) -> None:
    assert not tracing_on()
    async with running_stack(settings, components=("api",)) as stack:
        ride_id = await request_ride(stack)
        body = (await stack.call("GET", f"/v1/rides/{ride_id}/events", "rider", "r1",
                                 want=200)).json()
    assert body and all("traceparent" not in e for e in (body.get("items") or body))
