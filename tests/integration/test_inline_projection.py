"""The read models change in the transaction that writes each event: a report sent the
moment the previous one was accepted is never refused as too early, and the projector
consumers leave alone what was applied where it was written."""

from __future__ import annotations

import asyncio
import uuid

from nats.aio.msg import Msg
from sqlalchemy import func
from sqlmodel import Session, select

from domain.status import RideStatus
from events.consumer import ConsumerRunner, ConsumerSpec
from events.dlq import list_dead_letters
from events.envelope import APPLIED_HEADER, CloudEvent
from events.lag import all_caught_up
from store.tables import ProcessedEvent
from tests.support.rides import NEAR, TRIP, accept, answer, driver_online, raw_event, request_ride
from tests.support.stack import Stack, eventually


async def test_each_report_finds_the_read_model_updated_by_the_one_before(stack: Stack) -> None:
    await driver_online(stack, "d1", NEAR)
    ride_id = await request_ride(stack)
    await accept(stack, ride_id, "d1")
    # no waiting between the reports: each 202 means the ride's row has moved on
    for verb, status in (("arrive", "driver_arrived"), ("start", "in_progress")):
        await answer(stack, ride_id, "d1", verb)
        assert (await stack.ride(ride_id, "r1"))["status"] == status
    await stack.call("POST", f"/v1/rides/{ride_id}/complete", "driver", "d1", want=202,
                     json=TRIP)
    await stack.wait_status(ride_id, "r1", RideStatus.COMPLETED)

    # applied once each, where written: the ride-projector record of every ride event
    # was made by the writer; the consumer found nothing left to do
    await eventually(lambda: all_caught_up(stack.rt.js), "the consumers to catch up")

    def records(session: Session) -> int:
        q = select(func.count()).select_from(ProcessedEvent).where(
            ProcessedEvent.consumer == "ride-projector")
        return session.exec(q).one()

    history = (await stack.call("GET", f"/v1/rides/{ride_id}/events", "rider", "r1",
                                want=200)).json()["events"]
    assert stack.query(records) == len(history)


async def test_a_consumer_acknowledges_unread_what_carries_its_done_header(
    stack: Stack,
) -> None:
    """A message with the header is acknowledged without being parsed or handled (this one
    is not even a valid event, and is not dead-lettered); one without it is handled."""
    handled: list[str] = []

    async def handle(event: CloudEvent, msg: Msg) -> None:
        handled.append(event.subject)

    name = f"done-header-{uuid.uuid4().hex[:6]}"
    runner = ConsumerRunner(stack.rt.js, ConsumerSpec(
        name=name, stream="RIDES", prefix="rides", handler=handle, ordered=False,
        done_if_header=APPLIED_HEADER))
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        skipped, read = uuid.uuid4().hex, uuid.uuid4().hex
        await stack.rt.js.publish(f"rides.{skipped}.trip_ended", b"not an event",
                                  headers={APPLIED_HEADER: "1"})
        await stack.rt.js.publish(f"rides.{read}.trip_ended", raw_event(
            "ride.trip_ended", read,
            {"ride_id": read, "driver_id": "d", "distance_m": 1, "duration_s": 1}))
        async def read_only() -> bool:
            return handled == [read]

        await eventually(read_only, "the message without the header")
    finally:
        stop.set()
        await task
    assert [d for d in await list_dead_letters(stack.rt.js) if d.consumer == name] == []
