"""Time is the rider's: the rules that depend on when something happened judge by the
time the api committed the event (the CloudEvent's ``time``), never by when the saga
happens to hear of it. Real Temporal and NATS, real time (the rules read wall-clock
event times, which a time-skipping server's clock does not move), the workflow-trigger
held back and let go to make the saga hear late."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.contrib.pydantic import pydantic_data_converter

from domain.payments import CANCELLATION_FEE_CENTS, hold_cents
from domain.status import RideStatus
from infra.config import Settings
from tests.support.rides import (
    BEFORE_MATCHING,
    NEAR,
    accept,
    activity_runs,
    answer,
    driver_online,
    driver_row,
    ended,
    event_types,
    events,
    ledger,
    offered,
    offers_to,
    quoted_fare,
    request_ride,
    wait_driver_free,
    workflow,
)
from tests.support.stack import Stack, consumers_running, eventually, running_stack
from workflows.contract import Step

FREE_S = 3  # the free-cancel window
OFFER_S = 3  # the offer timeout
TRIGGER = ("workflow-trigger",)
OTHERS = ("ride-projector", "driver-projector", "notifier")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"free_cancel_s": FREE_S, "offer_timeout_s": OFFER_S})


@pytest.fixture
async def held(settings: Settings) -> AsyncIterator[Stack]:
    """The stack with its consumers left to the test (``consumers_running``)."""
    async with running_stack(settings, components=("worker", "relay", "api")) as stack:
        yield stack


def at(event: dict) -> datetime:
    return datetime.fromisoformat(event["time"])


async def test_a_cancel_made_inside_the_free_window_is_free_however_late_it_is_heard(
    held: Stack,
) -> None:
    stack = held
    async with consumers_running(stack, OTHERS):
        async with consumers_running(stack, TRIGGER):
            await driver_online(stack, "d1", NEAR)
            ride_id = await request_ride(stack)
            await accept(stack, ride_id, "d1")
        # the trigger is held back: the rider cancels half a second after assignment, and
        # the saga hears of it only once the window is long over
        await asyncio.sleep(0.5)
        await stack.call("POST", f"/v1/rides/{ride_id}/cancel", "rider", "r1", want=202)
        await asyncio.sleep(FREE_S + 1.5)
        async with consumers_running(stack, TRIGGER):
            ride = await ended(stack, ride_id)

    assert ride["status"] == RideStatus.CANCELLED
    assert ride["fare"]["cancellation_fee"] is None
    assert ride["payment"]["status"] == "voided"
    assert ledger(stack, ride_id) == [("authorize", hold_cents(quoted_fare())),
                                      ("void", hold_cents(quoted_fare()))]
    evs = {e["type"]: e for e in await events(stack, ride_id)}
    asked = (at(evs["ride.cancellation_requested"]) - at(evs["ride.driver_assigned"]))
    heard = (at(evs["ride.cancelled"]) - at(evs["ride.driver_assigned"]))
    assert asked.total_seconds() < FREE_S < heard.total_seconds()
    # the fee rule ran, and found the cancel inside the window
    runs = [r["name"] for r in await activity_runs(stack.temporal, ride_id)]
    assert Step.CHARGE_CANCELLATION_FEE in runs
    await wait_driver_free(stack, "d1")


async def test_a_cancel_made_after_the_free_window_pays_the_fee(stack: Stack) -> None:
    await driver_online(stack, "d1", NEAR)
    ride_id = await request_ride(stack)
    await accept(stack, ride_id, "d1")
    await answer(stack, ride_id, "d1", "arrive")
    await stack.wait_status(ride_id, "r1", RideStatus.DRIVER_ARRIVED)
    await asyncio.sleep(FREE_S + 1)  # the rider waits out the window, then cancels
    await stack.call("POST", f"/v1/rides/{ride_id}/cancel", "rider", "r1", want=202)
    ride = await ended(stack, ride_id)

    fee = f"{CANCELLATION_FEE_CENTS / 100:.2f}"
    assert ride["status"] == RideStatus.CANCELLED and ride["fare"]["cancellation_fee"] == fee
    assert ride["payment"] == {**ride["payment"], "status": "captured", "captured": fee}
    # the fee is captured from the hold; no void, no second capture
    assert ledger(stack, ride_id) == [
        ("authorize", hold_cents(quoted_fare())),
        ("capture", CANCELLATION_FEE_CENTS),
    ]
    await wait_driver_free(stack, "d1")
    evs = await events(stack, ride_id)
    assert [e["type"] for e in evs] == [
        *BEFORE_MATCHING,
        "ride.driver_offered",
        "ride.driver_accepted",
        "ride.driver_assigned",
        "ride.driver_arrived",
        "ride.cancellation_requested",
        "ride.driver_released",
        "ride.payment_captured",
        "ride.cancelled",
    ]
    assert evs[-2]["data"]["purpose"] == "cancellation_fee"
    assert evs[-1]["data"]["cancellation_fee"] == fee
    assert driver_row(stack, "d1") == ("available", None)


async def test_an_accept_sent_before_the_offer_expired_counts_when_heard_after(
    held: Stack,
) -> None:
    stack = held
    async with consumers_running(stack, OTHERS):
        async with consumers_running(stack, TRIGGER):
            await driver_online(stack, "d1", NEAR)
            ride_id = await request_ride(stack)
            await offered(stack, ride_id, "d1")
        # the driver accepts in time; the saga does not hear of it before its offer
        # timer fires
        await answer(stack, ride_id, "d1", "accept")
        handle = workflow(stack.temporal, ride_id)

        async def timer_fired() -> bool:
            history = await handle.fetch_history()
            return any(e.event_type == EventType.EVENT_TYPE_TIMER_FIRED for e in history.events)

        await eventually(timer_fired, "the offer timer to fire", timeout=OFFER_S + 20)
        async with consumers_running(stack, TRIGGER):
            assigned = await stack.wait_status(ride_id, "r1", RideStatus.DRIVER_ASSIGNED)

    assert assigned["driver_id"] == "d1"
    assert offers_to(stack, ride_id) == [("d1", "accepted")]
    assert "ride.offer_expired" not in await event_types(stack, ride_id)
    # the offer timer says whose offer it is and what its expiry means
    history = await handle.fetch_history()
    [timer] = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED]
    summary = pydantic_data_converter.payload_converter.from_payload(
        timer.user_metadata.summary, str)
    assert "driver d1" in summary and "expires" in summary
