"""No ride event is dropped, and redrive is safe (issue 13, items 2 and 3).

A ride's request held up in the DLQ does not lose the ride's later events: the first of
them starts the saga (signal-with-start, its input from the read model), and a cancel
ends it before any hold or offer. Redriving the request afterwards starts nothing — while
Temporal keeps the closed workflow, and after it is gone. Redriving a request that was
never applied books the ride, once, however many copies are redriven."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from temporalio.service import RPCError, RPCStatusCode

from domain.payments import hold_cents
from domain.status import RideStatus
from infra.config import Settings
from store.tables import Ride
from tests.support.dlq import dead_letter
from tests.support.rides import (
    NEAR,
    accept,
    activity_runs,
    drive,
    driver_online,
    driver_row,
    ended,
    event_types,
    final_fare,
    ledger,
    offers_to,
    quoted_fare,
    request_ride,
    workflow,
)
from tests.support.ridestream import ride_history
from tests.support.stack import Stack, consumers_running, eventually, running_stack
from workflows.contract import Step

OTHERS = ("ride-projector", "driver-projector", "notifier")
TRIGGER = ("workflow-trigger",)


@pytest.fixture
async def held(settings: Settings) -> AsyncIterator[Stack]:
    """The stack with its consumers left to the test (``consumers_running``)."""
    async with running_stack(settings, components=("worker", "relay", "api")) as stack:
        async with consumers_running(stack, OTHERS):
            yield stack


async def requested_then_dead_lettered(stack: Stack, rider: str = "r1") -> tuple[str, int]:
    """A ride whose ``ride.requested`` the workflow-trigger gave up on (it never ran)."""
    ride_id = await request_ride(stack, rider)
    return ride_id, await dead_letter(stack.rt.js, ride_id, "ride.requested")


async def redrive(stack: Stack, letter: int) -> None:
    await stack.call("POST", f"/v1/admin/dlq/{letter}/redrive", "admin", "root", want=202)


async def closed_ride_events(stack: Stack) -> float:
    """``ridehail_events_for_closed_rides_total`` for ``ride.requested``."""
    text = (await stack.http.get("/metrics")).text
    line = 'ridehail_events_for_closed_rides_total{type="ride.requested"} '
    return next((float(x.removeprefix(line)) for x in text.splitlines()
                 if x.startswith(line)), 0.0)


async def test_a_cancel_before_the_saga_started_ends_the_ride_with_no_hold_and_no_offer(
    held: Stack,
) -> None:
    stack = held
    await driver_online(stack, "d1", NEAR)
    ride_id, letter = await requested_then_dead_lettered(stack)
    gone, gone_letter = await requested_then_dead_lettered(stack, rider="r2")
    await stack.call("POST", f"/v1/rides/{ride_id}/cancel", "rider", "r1", want=202)
    async with consumers_running(stack, TRIGGER):
        ride = await ended(stack, ride_id)
        assert ride["status"] == RideStatus.CANCELLED
        assert ride["payment"]["status"] == "none" and ride["fare"]["cancellation_fee"] is None
        assert ledger(stack, ride_id) == [] and offers_to(stack, ride_id) == []
        assert driver_row(stack, "d1") == ("available", None)
        assert [r["name"] for r in await activity_runs(stack.temporal, ride_id)] == [
            Step.CANCEL_RIDE]
        # the request itself is still in the DLQ, not on RIDES; the ride's history (the
        # event log) has it all the same
        on_rides = [e.type for _, e in await ride_history(stack.rt.js, ride_id)]
        assert on_rides == ["ride.cancellation_requested", "ride.cancelled"]
        assert await event_types(stack, ride_id) == ["ride.requested",
                                                     "ride.cancellation_requested",
                                                     "ride.cancelled"]

        # Redriving the request later starts no second saga: the closed workflow's id is
        # refused ...
        await redrive(stack, letter)
        await eventually(lambda: _at_least(closed_ride_events(stack), 1),
                         "the redriven request to be recorded as for a closed ride")
        runs = [w async for w in stack.temporal.list_workflows(f"WorkflowId='ride-{ride_id}'")]
        assert len(runs) == 1

        # ... and for a ride whose workflow Temporal no longer keeps (past retention:
        # here, one whose saga ran elsewhere and whose request is redriven now), the
        # read model's final status refuses it
        await stack.db.write(lambda s: s.add(_ended(s.get(Ride, gone))))
        await redrive(stack, gone_letter)
        await eventually(lambda: _at_least(closed_ride_events(stack), 2),
                         "the second redrive to be recorded as for a closed ride")
        with pytest.raises(RPCError) as no_workflow:
            await workflow(stack.temporal, gone).describe()
        assert no_workflow.value.status == RPCStatusCode.NOT_FOUND
        assert ledger(stack, gone) == []
    assert ledger(stack, ride_id) == []
    assert (await stack.ride(ride_id, "r1"))["status"] == RideStatus.CANCELLED


async def test_redriving_a_request_never_applied_books_the_ride_once(held: Stack) -> None:
    stack = held
    await driver_online(stack, "d1", NEAR)
    ride_id, letter = await requested_then_dead_lettered(stack)
    async with consumers_running(stack, TRIGGER):
        await redrive(stack, letter)
        await accept(stack, ride_id, "d1")
        # another copy of it (a second consumer gave up on it too), redriven mid-ride
        copy = await dead_letter(stack.rt.js, ride_id, "ride.requested",
                                 consumer="ride-projector", take=False)
        await redrive(stack, copy)
        done = await drive(stack, ride_id, "d1")

    assert done["status"] == RideStatus.COMPLETED
    assert ledger(stack, ride_id) == [("authorize", hold_cents(quoted_fare())),
                                      ("capture", final_fare())]
    runs = [w async for w in stack.temporal.list_workflows(f"WorkflowId='ride-{ride_id}'")]
    assert len(runs) == 1
    # two copies of the request on RIDES (both redriven), one in the ride's history
    on_rides = [e.type for _, e in await ride_history(stack.rt.js, ride_id)]
    assert on_rides.count("ride.requested") == 2
    types = await event_types(stack, ride_id)
    assert types.count("ride.payment_authorized") == 1 and types.count("ride.requested") == 1


def _ended(ride: Ride | None) -> Ride:
    assert ride is not None
    ride.status = RideStatus.CANCELLED
    return ride


async def _at_least(value: object, n: float) -> bool:
    with contextlib.suppress(Exception):
        return float(await value) >= n  # type: ignore[misc]
    return False
