"""The saga's activities, run by Temporal the way a retry or a replay after a crash runs
them: twice for the same workflow and step. Money moves once and each fact is published
once, because keys and event ids derive from the workflow id and the step. Also: the
pricing activity keeps a live quote only for the trip it was made for.

Tiny workflows on the time-skipping test server call the real activities, against the
test's database and the session's NATS."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import build_activities
from domain.geo import Point
from domain.payments import hold_cents
from infra.config import Settings
from store.quotes import make_quote
from tests.support.rides import ledger
from tests.support.ridestream import ride_history
from tests.support.stack import Stack, running_stack
from workflows.contract import Step
from workflows.types import AuthorizeRequest, CaptureRequest, FareQuote, QuoteRequest, SettleRequest

QUEUE = "saga-activities-test"
ONCE = RetryPolicy(maximum_attempts=1)
PICKUP = Point(lat=40.75, lng=-73.99)
DROPOFF = Point(lat=40.76, lng=-73.97)


class MoneyResults(BaseModel):
    authorized: list[int]
    captured: list[int]
    void_after_capture: int
    refunded: list[int]


@workflow.defn(sandboxed=False)
class PaymentsTwice:
    """Every payment step twice, as retries after lost answers would run them."""

    @workflow.run
    async def run(self, ride_id: str) -> MoneyResults:
        async def call(name: str, arg: BaseModel) -> Any:
            return await workflow.execute_activity(
                name, arg, start_to_close_timeout=timedelta(seconds=10), retry_policy=ONCE
            )

        quote = FareQuote(
            fare_cents=1000, currency="USD", surge_multiplier=1.0, distance_m=2000, duration_s=300
        )
        auth = AuthorizeRequest(ride_id=ride_id, payment_method="card", quote=quote)
        capture = CaptureRequest(ride_id=ride_id, quote=quote, distance_m=2300, duration_s=540)
        settle = SettleRequest(ride_id=ride_id)
        authorized = [(await call(Step.AUTHORIZE_PAYMENT, auth))["amount_cents"] for _ in "12"]
        captured = [(await call(Step.CAPTURE_PAYMENT, capture))["amount_cents"] for _ in "12"]
        void = (await call(Step.VOID_PAYMENT, settle))["amount_cents"]
        refunded = [(await call(Step.REFUND_PAYMENT, settle))["amount_cents"] for _ in "12"]
        return MoneyResults(
            authorized=authorized, captured=captured, void_after_capture=void, refunded=refunded
        )


@workflow.defn(sandboxed=False)
class Price:
    @workflow.run
    async def run(self, req: QuoteRequest) -> FareQuote:
        return await workflow.execute_activity(
            Step.QUOTE_FARE,
            req,
            result_type=FareQuote,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=ONCE,
        )


@pytest.fixture
async def activity_worker(
    settings: Settings, time_skipping: WorkflowEnvironment
) -> AsyncIterator[Stack]:
    async with running_stack(settings, temporal=time_skipping.client, components=()) as stack:
        async with Worker(
            stack.temporal,
            task_queue=QUEUE,
            workflows=[PaymentsTwice, Price],
            activities=build_activities(stack.db, stack.rt.outbox),
        ):
            yield stack


async def test_retried_payment_steps_move_money_once(activity_worker: Stack) -> None:
    stack = activity_worker
    ride_id = uuid.uuid4().hex
    result = await stack.temporal.execute_workflow(
        PaymentsTwice.run, ride_id, id=f"ride-{ride_id}", task_queue=QUEUE
    )

    hold = hold_cents(1000)
    assert result.authorized == [hold, hold]
    assert result.captured[0] == result.captured[1] > 0
    assert result.void_after_capture == result.captured[0]  # settled already: no void
    assert result.refunded == [result.captured[0]] * 2
    assert ledger(stack, ride_id) == [
        ("authorize", hold),
        ("capture", result.captured[0]),
        ("refund", result.captured[0]),
    ]
    published = [e.type for _, e in await ride_history(stack.rt.js, ride_id)]
    assert published == [
        "ride.payment_authorized",
        "ride.payment_captured",
        "ride.payment_refunded",
    ]


async def test_a_live_quote_is_kept_only_for_its_own_trip(activity_worker: Stack) -> None:
    stack = activity_worker
    with stack.db.writing() as s:
        quote = make_quote(s, "r1", PICKUP, DROPOFF, quote_id="q1")
        quote.fare_cents = 4321  # as if priced under surge a minute ago
        s.add(quote)

    async def price(**kw: Any) -> FareQuote:
        req = QuoteRequest(
            ride_id=uuid.uuid4().hex,
            rider_id="r1",
            pickup=PICKUP,
            dropoff=DROPOFF,
            quote_id=quote.quote_id,
        )
        return await stack.temporal.execute_workflow(
            Price.run,
            QuoteRequest(**{**req.model_dump(), **kw}),
            id=f"ride-{req.ride_id}",
            task_queue=QUEUE,
        )

    kept = await price()
    assert (kept.fare_cents, kept.quote_id) == (4321, quote.quote_id)
    # someone else's quote, or a quote for another trip, is not honoured: priced afresh
    for other in (await price(rider_id="r2"), await price(dropoff=Point(lat=40.70, lng=-74.01))):
        assert other.quote_id is None and other.fare_cents != 4321
