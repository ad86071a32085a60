"""The saga's timer paths — offer timeout, matching deadline, free-cancel window — on the
whole stack (API, consumers, real activities, database, NATS) with the workflow on the
time-skipping Temporal test server: ``time_skipping.sleep`` moves the saga's clock past a
timeout at once, and waiting on a workflow's result skips whatever timers remain.

The free-cancel window is measured on the api's event times (wall clock), which skipping
the workflow's clock does not move: a cancel after the window is in
``test_saga_event_times``, in real time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.testing import WorkflowEnvironment

from domain.payments import hold_cents
from domain.status import RideStatus
from infra.config import Settings
from tests.support.rides import (
    BEFORE_MATCHING,
    FARTHER,
    NEAR,
    TRIP_EVENTS,
    accept,
    activity_runs,
    drive,
    driver_online,
    ended,
    event_types,
    events,
    ledger,
    offered,
    offers_to,
    outcome_skipping_time,
    quoted_fare,
    request_ride,
    search_attributes,
    wait_driver_free,
)
from tests.support.stack import Stack, running_stack
from workflows.contract import Step


@pytest.fixture
async def ts_stack(settings: Settings, time_skipping: WorkflowEnvironment) -> AsyncIterator[Stack]:
    async with running_stack(settings, temporal=time_skipping.client) as stack:
        yield stack


async def test_no_driver_before_the_matching_deadline(
    ts_stack: Stack, time_skipping: WorkflowEnvironment, settings: Settings
) -> None:
    stack = ts_stack
    ride_id = await request_ride(stack)
    await stack.wait_status(ride_id, "r1", RideStatus.MATCHING)
    # the searches' pauses and the deadline pass at once
    outcome = await outcome_skipping_time(time_skipping, ride_id)
    assert (outcome.status, outcome.failure_reason) == ("failed", "no_driver_available")

    ride = await ended(stack, ride_id)
    assert (ride["status"], ride["failure_reason"]) == (RideStatus.FAILED, "no_driver_available")
    assert ride["payment"]["status"] == "voided"
    hold = hold_cents(quoted_fare())
    assert ledger(stack, ride_id) == [("authorize", hold), ("void", hold)]
    assert await event_types(stack, ride_id) == [
        *BEFORE_MATCHING,
        "ride.payment_voided",
        "ride.failed",
    ]
    # it kept searching until the deadline: every few seconds, one search each time
    searches = [
        r for r in await activity_runs(stack.temporal, ride_id) if r["name"] == Step.RESERVE_DRIVER
    ]
    assert len(searches) >= settings.matching_deadline_s / 3
    assert all(r["local"] and r["outcome"] == "completed" for r in searches)
    assert await search_attributes(stack.temporal, ride_id) == {
        "RideStatus": RideStatus.FAILED,
        "RiderId": "r1",
    }


async def test_offer_timeout_then_the_next_driver_accepts(
    ts_stack: Stack, time_skipping: WorkflowEnvironment, settings: Settings
) -> None:
    stack = ts_stack
    await driver_online(stack, "d1", NEAR)
    await driver_online(stack, "d2", FARTHER)
    ride_id = await request_ride(stack)
    await offered(stack, ride_id, "d1")
    await time_skipping.sleep(settings.offer_timeout_s + 1)  # d1 never answers
    await accept(stack, ride_id, "d2")
    # too late for d1: the offer is gone
    await stack.call("POST", f"/v1/rides/{ride_id}/accept", "driver", "d1", want=409)
    await drive(stack, ride_id, "d2")

    assert offers_to(stack, ride_id) == [("d1", "expired"), ("d2", "accepted")]
    assert [k for k, _ in ledger(stack, ride_id)] == ["authorize", "capture"]
    await wait_driver_free(stack, "d1")
    await wait_driver_free(stack, "d2")
    evs = await events(stack, ride_id)
    assert [e["type"] for e in evs] == [
        *BEFORE_MATCHING,
        "ride.driver_offered",
        "ride.offer_expired",
        "ride.driver_released",
        "ride.driver_offered",
        "ride.driver_accepted",
        "ride.driver_assigned",
        *TRIP_EVENTS,
    ]
    assert evs[3]["data"]["driver_id"] == "d1"
    assert evs[4]["data"] == {"ride_id": ride_id, "driver_id": "d1", "reason": "offer_expired"}
    assert await search_attributes(stack.temporal, ride_id) == {
        "RideStatus": RideStatus.COMPLETED,
        "RiderId": "r1",
        "DriverId": "d2",
    }


async def test_rider_cancels_within_the_free_window(
    ts_stack: Stack, time_skipping: WorkflowEnvironment, settings: Settings
) -> None:
    stack = ts_stack
    await driver_online(stack, "d1", NEAR)
    ride_id = await request_ride(stack)
    await accept(stack, ride_id, "d1")
    await time_skipping.sleep(settings.free_cancel_s - 10)  # nearly, not quite, over
    await stack.call("POST", f"/v1/rides/{ride_id}/cancel", "rider", "r1", want=202)
    ride = await ended(stack, ride_id)

    assert ride["status"] == RideStatus.CANCELLED and ride["fare"]["cancellation_fee"] is None
    assert ride["payment"]["status"] == "voided"
    hold = hold_cents(quoted_fare())
    assert ledger(stack, ride_id) == [("authorize", hold), ("void", hold)]
    await wait_driver_free(stack, "d1")
    evs = await events(stack, ride_id)
    assert [e["type"] for e in evs] == [
        *BEFORE_MATCHING,
        "ride.driver_offered",
        "ride.driver_accepted",
        "ride.driver_assigned",
        "ride.cancellation_requested",
        "ride.driver_released",
        "ride.payment_voided",
        "ride.cancelled",
    ]
    assert evs[-3]["data"]["reason"] == "rider_cancelled"
    assert evs[-1]["data"]["cancellation_fee"] is None
    outcome = await outcome_skipping_time(time_skipping, ride_id)
    assert (outcome.status, outcome.cancellation_fee_cents) == ("cancelled", None)
