"""RideWorkflow alone, every saga path, on the time-skipping test server: the activities
are test activities of the same names (tests/support/saga_doubles.py), so each test
asserts the steps the saga ran, in order, and the outcome — in a fraction of a second
of real time, however long the timers it waits on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.payments import CANCELLATION_FEE_CENTS
from domain.status import RideStatus
from tests.support.saga_doubles import FARE_CENTS, Rider, SagaDoubles, ride_input, start_ride
from workflows.contract import STATUS_QUERY, TASK_QUEUE, Step
from workflows.ride import RideWorkflow
from workflows.types import OfferMade, ReleaseRequest, RideOutcome

S = Step
BOOKED = [S.QUOTE_FARE, S.AUTHORIZE_PAYMENT]


@pytest.fixture
async def doubles() -> SagaDoubles:
    return SagaDoubles(drivers=["d1", "d2"])


@pytest.fixture
async def env(time_skipping: WorkflowEnvironment, doubles: SagaDoubles
              ) -> AsyncIterator[WorkflowEnvironment]:
    async with Worker(time_skipping.client, task_queue=TASK_QUEUE, workflows=[RideWorkflow],
                      activities=doubles.activities()):
        yield time_skipping


async def next_offer(doubles: SagaDoubles) -> OfferMade:
    return await asyncio.wait_for(doubles.offers.get(), timeout=10)


def releases(doubles: SagaDoubles) -> list[str]:
    args: list[ReleaseRequest] = doubles.args(S.RELEASE_DRIVER)
    return [r.reason for r in args]


async def booked(env: WorkflowEnvironment, ride_id: str, **kw: Any) -> Rider:
    return Rider(await start_ride(env.client, ride_input(ride_id, **kw)))


async def test_happy_path(env: WorkflowEnvironment, doubles: SagaDoubles) -> None:
    rider = await booked(env, "happy")
    offer = await next_offer(doubles)
    await rider.answer(offer)
    await rider.drive(offer.driver_id)
    outcome: RideOutcome = await rider.handle.result()
    assert doubles.steps() == [*BOOKED, S.RESERVE_DRIVER, S.ASSIGN_DRIVER, S.RELEASE_DRIVER,
                               S.CAPTURE_PAYMENT, S.COMPLETE_RIDE]
    assert releases(doubles) == ["trip_completed"]
    assert outcome.status == RideStatus.COMPLETED and outcome.driver_id == "d1"
    assert outcome.final_fare_cents is not None and outcome.final_fare_cents > 0
    assert await rider.handle.query(STATUS_QUERY) == RideStatus.COMPLETED


async def test_a_declined_card_voids_and_fails(env: WorkflowEnvironment,
                                               doubles: SagaDoubles) -> None:
    doubles.decline_card = True
    rider = await booked(env, "declined")
    outcome = await rider.handle.result()
    assert doubles.steps() == [*BOOKED, S.VOID_PAYMENT, S.FAIL_RIDE]
    assert (outcome.status, outcome.failure_reason) == (RideStatus.FAILED, "payment_declined")
    assert len(doubles.args(S.AUTHORIZE_PAYMENT)) == 1  # not retried


async def test_no_driver_by_the_matching_deadline(env: WorkflowEnvironment,
                                                  doubles: SagaDoubles) -> None:
    doubles.drivers = []
    rider = await booked(env, "nodriver", matching_deadline_s=30)
    outcome = await rider.handle.result()  # skips the searches' pauses and the deadline
    searches = doubles.steps().count(S.RESERVE_DRIVER)
    assert searches >= 10  # every 3 s for 30 s
    assert doubles.steps() == [*BOOKED, *[S.RESERVE_DRIVER] * searches, S.RELEASE_DRIVER,
                               S.VOID_PAYMENT, S.FAIL_RIDE]
    assert releases(doubles) == ["ride_failed"]
    assert (outcome.status, outcome.failure_reason) == (RideStatus.FAILED,
                                                        "no_driver_available")


async def test_decline_then_the_next_driver_accepts(env: WorkflowEnvironment,
                                                    doubles: SagaDoubles) -> None:
    rider = await booked(env, "decline")
    first = await next_offer(doubles)
    await rider.answer(first, accept=False)
    second = await next_offer(doubles)
    assert (first.driver_id, second.driver_id) == ("d1", "d2")
    await rider.answer(second)
    await rider.drive("d2")
    outcome = await rider.handle.result()
    assert doubles.steps() == [*BOOKED, S.RESERVE_DRIVER, S.DECLINE_OFFER, S.RESERVE_DRIVER,
                               S.ASSIGN_DRIVER, S.RELEASE_DRIVER, S.CAPTURE_PAYMENT,
                               S.COMPLETE_RIDE]
    assert doubles.args(S.RESERVE_DRIVER)[1].exclude == ["d1"]
    assert outcome.status == RideStatus.COMPLETED and outcome.driver_id == "d2"


async def test_offer_timeout_then_the_next_driver_accepts(env: WorkflowEnvironment,
                                                          doubles: SagaDoubles) -> None:
    rider = await booked(env, "timeout", offer_timeout_s=15)
    first = await next_offer(doubles)
    await env.sleep(16)  # the first driver never answers
    second = await next_offer(doubles)
    assert (first.driver_id, second.driver_id) == ("d1", "d2")
    await rider.answer(first)  # too late: the offer has expired, nobody waits for it
    await rider.answer(second)
    await rider.drive("d2")
    outcome = await rider.handle.result()
    assert doubles.steps()[:6] == [*BOOKED, S.RESERVE_DRIVER, S.EXPIRE_OFFER,
                                   S.RESERVE_DRIVER, S.ASSIGN_DRIVER]
    assert outcome.status == RideStatus.COMPLETED and outcome.driver_id == "d2"


async def test_rider_cancels_before_assignment(env: WorkflowEnvironment,
                                               doubles: SagaDoubles) -> None:
    rider = await booked(env, "cancel-early")
    await next_offer(doubles)
    await rider.cancel()
    outcome = await rider.handle.result()
    assert doubles.steps() == [*BOOKED, S.RESERVE_DRIVER, S.RELEASE_DRIVER, S.VOID_PAYMENT,
                               S.CANCEL_RIDE]
    assert releases(doubles) == ["rider_cancelled"]
    assert outcome.status == RideStatus.CANCELLED and outcome.cancellation_fee_cents is None


async def assigned(rider: Rider, doubles: SagaDoubles) -> OfferMade:
    offer = await next_offer(doubles)
    await rider.answer(offer)
    await doubles.called(S.ASSIGN_DRIVER)
    return offer


async def test_rider_cancels_after_assignment_within_the_free_window(
    env: WorkflowEnvironment, doubles: SagaDoubles
) -> None:
    rider = await booked(env, "cancel-free", free_cancel_s=120)
    await assigned(rider, doubles)
    await rider.cancel()
    outcome = await rider.handle.result()
    assert doubles.steps()[-3:] == [S.RELEASE_DRIVER, S.CHARGE_CANCELLATION_FEE,
                                    S.CANCEL_RIDE]
    assert outcome.status == RideStatus.CANCELLED and outcome.cancellation_fee_cents is None


async def test_rider_cancels_after_the_free_window_and_pays_the_fee(
    env: WorkflowEnvironment, doubles: SagaDoubles
) -> None:
    rider = await booked(env, "cancel-fee", free_cancel_s=120)
    await assigned(rider, doubles)
    await env.sleep(121)
    await rider.cancel()
    outcome = await rider.handle.result()
    assert doubles.steps()[-3:] == [S.RELEASE_DRIVER, S.CHARGE_CANCELLATION_FEE,
                                    S.CANCEL_RIDE]
    assert outcome.status == RideStatus.CANCELLED
    assert outcome.cancellation_fee_cents == CANCELLATION_FEE_CENTS


async def test_the_driver_backs_out_and_the_ride_is_matched_again(
    env: WorkflowEnvironment, doubles: SagaDoubles
) -> None:
    rider = await booked(env, "backout")
    await assigned(rider, doubles)
    await rider.cancel(by_role="driver", by_id="d1")
    second = await next_offer(doubles)
    assert second.driver_id == "d2"
    await rider.cancel(by_role="driver", by_id="d1")  # a repeat no longer applies
    await rider.answer(second)
    await rider.drive("d2")
    outcome = await rider.handle.result()
    assert doubles.steps() == [*BOOKED, S.RESERVE_DRIVER, S.ASSIGN_DRIVER, S.RELEASE_DRIVER,
                               S.RESERVE_DRIVER, S.ASSIGN_DRIVER, S.RELEASE_DRIVER,
                               S.CAPTURE_PAYMENT, S.COMPLETE_RIDE]
    assert releases(doubles) == ["driver_cancelled", "trip_completed"]
    assert doubles.args(S.RESERVE_DRIVER)[1].exclude == ["d1"]
    assert outcome.status == RideStatus.COMPLETED and outcome.driver_id == "d2"


async def test_a_failure_after_the_capture_refunds_the_fare(
    env: WorkflowEnvironment, doubles: SagaDoubles
) -> None:
    doubles.fail_completion = True
    rider = await booked(env, "refund")
    offer = await next_offer(doubles)
    await rider.answer(offer)
    await rider.drive(offer.driver_id)
    outcome = await rider.handle.result()
    assert doubles.steps() == [*BOOKED, S.RESERVE_DRIVER, S.ASSIGN_DRIVER, S.RELEASE_DRIVER,
                               S.CAPTURE_PAYMENT, S.COMPLETE_RIDE, S.REFUND_PAYMENT,
                               S.FAIL_RIDE]
    assert (outcome.status, outcome.failure_reason) == (RideStatus.FAILED, "step_failed")
    assert doubles.args(S.CAPTURE_PAYMENT)[0].quote.fare_cents == FARE_CENTS
