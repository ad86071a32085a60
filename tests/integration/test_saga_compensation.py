"""RideWorkflow when a step or a compensation fails for good: a failing compensation is
retried, then surfaced (the ride ends failed/compensation_failed, with a ride.failed
event and an error log naming the ride); a step that fails after the fare was captured
has the capture refunded.

The failures are injected by registering, on a worker of the test's own, an activity of
the same name that fails, next to the real ones. The workflow runs on the time-skipping
test server, so the compensations' retry backoff passes at once."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import build_activities
from domain.payments import hold_cents
from domain.status import RideStatus
from infra.config import Settings
from tests.support.rides import (
    BEFORE_MATCHING,
    NEAR,
    accept,
    activity_runs,
    answer,
    cancel_between_searches,
    driver_online,
    driver_row,
    ended,
    events,
    final_fare,
    ledger,
    outcome_skipping_time,
    quoted_fare,
    request_ride,
    search_attributes,
    wait_driver_free,
)
from tests.support.stack import Stack, running_stack
from workflows.contract import TASK_QUEUE, Step
from workflows.ride import RideWorkflow
from workflows.steps import COMPENSATION_RETRY
from workflows.types import Capture, RideEnd, SettleRequest


@pytest.fixture
async def ts_stack_without_worker(
    settings: Settings, time_skipping: WorkflowEnvironment
) -> AsyncIterator[Stack]:
    async with running_stack(
        settings, temporal=time_skipping.client, components=("consumers", "relay", "api")
    ) as stack:
        yield stack


def worker(stack: Stack, *replacements: Callable[..., Any]) -> Worker:
    """A worker with the real activities, except those replaced (matched by name)."""
    replaced = {activity._Definition.must_from_callable(r).name for r in replacements}
    real = [
        a
        for a in build_activities(stack.db, stack.rt.outbox)
        if activity._Definition.must_from_callable(a).name not in replaced
    ]
    return Worker(
        stack.temporal,
        task_queue=TASK_QUEUE,
        workflows=[RideWorkflow],
        activities=[*real, *replacements],
    )


@activity.defn(name=Step.VOID_PAYMENT)
async def void_never_goes_through(req: SettleRequest) -> Capture:
    raise RuntimeError("payment gateway unreachable")


async def test_a_compensation_that_keeps_failing_fails_the_ride_loudly(
    ts_stack_without_worker: Stack,
    time_skipping: WorkflowEnvironment,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stack = ts_stack_without_worker
    caplog.set_level(logging.WARNING, logger="temporalio.workflow")
    async with worker(stack, void_never_goes_through):
        ride_id = await request_ride(stack)
        await stack.wait_status(ride_id, "r1", RideStatus.MATCHING)
        await cancel_between_searches(stack, ride_id)
        outcome = await outcome_skipping_time(time_skipping, ride_id)

    assert (outcome.status, outcome.failure_reason) == ("failed", "compensation_failed")
    ride = await ended(stack, ride_id)
    assert (ride["status"], ride["failure_reason"]) == (RideStatus.FAILED, "compensation_failed")
    # the hold is still there, for an operator to release: nothing pretends otherwise
    assert ride["payment"]["status"] == "authorized"
    assert ledger(stack, ride_id) == [("authorize", hold_cents(quoted_fare()))]
    evs = await events(stack, ride_id)
    assert [e["type"] for e in evs] == [
        *BEFORE_MATCHING,
        "ride.cancellation_requested",
        "ride.failed",
    ]
    detail = evs[-1]["data"]["detail"]
    assert "cancelled by the rider" in detail and "settle the hold" in detail
    assert "payment gateway unreachable" in detail

    # retried to the bound, then given up
    runs = await activity_runs(stack.temporal, ride_id)
    voids = [r for r in runs if r["name"] == Step.VOID_PAYMENT]
    assert [(r["attempt"], r["outcome"], r["local"]) for r in voids] == [
        (COMPENSATION_RETRY.maximum_attempts, "failed", False)
    ]
    assert await search_attributes(stack.temporal, ride_id) == {
        "RideStatus": RideStatus.FAILED,
        "RiderId": "r1",
    }

    # and logged as errors naming the ride
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(ride_id in m and "settle the hold" in m for m in errors), errors
    assert any(ride_id in m and "compensation_failed" in m for m in errors), errors


def completion_failing(real: Callable[..., Any]) -> Callable[..., Any]:
    @activity.defn(name=Step.COMPLETE_RIDE)
    async def complete_ride(end: RideEnd) -> None:
        raise ApplicationError("the ride record was refused", non_retryable=True)

    return complete_ride


async def test_a_step_failing_after_the_capture_refunds_the_fare(
    ts_stack_without_worker: Stack, time_skipping: WorkflowEnvironment
) -> None:
    stack = ts_stack_without_worker
    real_complete = next(
        a for a in build_activities(stack.db, stack.rt.outbox) if a.__name__ == Step.COMPLETE_RIDE
    )
    async with worker(stack, completion_failing(real_complete)):
        await driver_online(stack, "d1", NEAR)
        ride_id = await request_ride(stack)
        await accept(stack, ride_id, "d1")
        for verb, status in (("arrive", "driver_arrived"), ("start", "in_progress")):
            await answer(stack, ride_id, "d1", verb)
            await stack.wait_status(ride_id, "r1", status)
        await stack.call(
            "POST",
            f"/v1/rides/{ride_id}/complete",
            "driver",
            "d1",
            want=202,
            json={"distance_m": 2300, "duration_s": 540},
        )
        # the ending needs no timer: wait for it in real time (unlocking time skipping
        # before the trip_ended signal is in would skip to the workflow's timeout)
        ride = await ended(stack, ride_id)
        outcome = await outcome_skipping_time(time_skipping, ride_id)

    assert (outcome.status, outcome.failure_reason) == ("failed", "step_failed")
    assert (ride["status"], ride["failure_reason"]) == (RideStatus.FAILED, "step_failed")
    assert ride["payment"]["status"] == "refunded"
    # captured, then refunded in full: a ride that did not complete keeps no money
    assert ledger(stack, ride_id) == [
        ("authorize", hold_cents(quoted_fare())),
        ("capture", final_fare()),
        ("refund", final_fare()),
    ]
    # the driver was freed when the trip ended, before the capture
    await wait_driver_free(stack, "d1")
    evs = await events(stack, ride_id)
    assert [e["type"] for e in evs][-5:] == [
        "ride.trip_ended",
        "ride.driver_released",
        "ride.payment_captured",
        "ride.payment_refunded",
        "ride.failed",
    ]
    assert evs[-4]["data"]["reason"] == "trip_completed"
    assert Step.COMPLETE_RIDE in evs[-1]["data"]["detail"]
    assert driver_row(stack, "d1") == ("available", None)
    # the recording step (a local activity) failed for good; the refund ran as an activity
    runs = await activity_runs(stack.temporal, ride_id)
    assert [(r["name"], r["local"], r["outcome"]) for r in runs][-5:] == [
        (Step.RELEASE_DRIVER, True, "completed"),
        (Step.CAPTURE_PAYMENT, False, "completed"),
        (Step.COMPLETE_RIDE, True, "failed"),
        (Step.REFUND_PAYMENT, False, "completed"),
        (Step.FAIL_RIDE, True, "completed"),
    ]
