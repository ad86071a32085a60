"""Test activities for RideWorkflow: registered under the saga's step names, they answer
as the real ones would from a script, and record every call in order — so the workflow
runs alone, on the time-skipping test server, without a database, NATS or the API.

The samples' way of testing a workflow: the same workflow code, its activities
replaced by test implementations of the same names and types.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError

from domain.payments import cancellation_fee_cents, final_charge_cents, hold_cents
from workflows.contract import PAYMENT_DECLINED, RIDE_EVENT_SIGNAL, TASK_QUEUE, Step
from workflows.ride import RideWorkflow
from workflows.types import (
    Authorization,
    AuthorizeRequest,
    Capture,
    CaptureRequest,
    FareQuote,
    FeeRequest,
    OfferClosed,
    OfferMade,
    OfferRef,
    Point,
    QuoteRequest,
    ReleaseRequest,
    ReserveRequest,
    RideEnd,
    RideInput,
    RideOutcome,
    RideSignal,
    SettleRequest,
)

FARE_CENTS = 1550
CURRENCY = "USD"


@dataclass
class SagaDoubles:
    """The saga's activities, scripted. ``drivers``: who ``reserve_driver`` offers the
    ride to, in turn (then nobody); ``decline_card`` and ``fail_completion`` make those
    steps fail for good."""

    drivers: list[str] = field(default_factory=list)
    decline_card: bool = False
    fail_completion: bool = False
    calls: list[tuple[Step, Any]] = field(default_factory=list)
    offers: asyncio.Queue[OfferMade] = field(default_factory=asyncio.Queue)
    _held: int = 0
    _called: defaultdict[Step, asyncio.Event] = field(
        default_factory=lambda: defaultdict(asyncio.Event))

    def record(self, step: Step, arg: Any) -> None:
        self.calls.append((step, arg))
        self._called[step].set()

    async def called(self, step: Step, timeout_s: float = 10) -> None:
        """Wait until ``step`` has run at least once."""
        await asyncio.wait_for(self._called[step].wait(), timeout_s)

    def steps(self) -> list[Step]:
        return [name for name, _ in self.calls]

    def args(self, step: Step) -> list[Any]:
        return [arg for name, arg in self.calls if name == step]

    def activities(self) -> list[Callable[..., Any]]:
        """Every double, to register with a worker."""
        return [self.quote_fare, self.authorize_payment, self.void_payment,
                self.capture_payment, self.refund_payment, self.charge_cancellation_fee,
                self.reserve_driver, self.expire_offer, self.decline_offer, self.assign_driver,
                self.release_driver, self.complete_ride, self.cancel_ride, self.fail_ride]

    # --- pricing and payment ----------------------------------------------------------

    @activity.defn(name=Step.QUOTE_FARE)
    async def quote_fare(self, req: QuoteRequest) -> FareQuote:
        self.record(Step.QUOTE_FARE, req)
        return FareQuote(fare_cents=FARE_CENTS, currency=CURRENCY, surge_multiplier=1.0,
                         distance_m=2300, duration_s=540)

    @activity.defn(name=Step.AUTHORIZE_PAYMENT)
    async def authorize_payment(self, req: AuthorizeRequest) -> Authorization:
        self.record(Step.AUTHORIZE_PAYMENT, req)
        if self.decline_card:
            raise ApplicationError("card declined", type=PAYMENT_DECLINED, non_retryable=True)
        self._held = hold_cents(req.quote.fare_cents)
        return Authorization(amount_cents=self._held, currency=CURRENCY)

    @activity.defn(name=Step.VOID_PAYMENT)
    async def void_payment(self, req: SettleRequest) -> None:
        self.record(Step.VOID_PAYMENT, req)

    @activity.defn(name=Step.CAPTURE_PAYMENT)
    async def capture_payment(self, req: CaptureRequest) -> Capture:
        self.record(Step.CAPTURE_PAYMENT, req)
        amount = final_charge_cents(req.distance_m, req.duration_s,
                                    req.quote.surge_multiplier, self._held)
        return Capture(amount_cents=amount, currency=CURRENCY)

    @activity.defn(name=Step.REFUND_PAYMENT)
    async def refund_payment(self, req: SettleRequest) -> Capture:
        self.record(Step.REFUND_PAYMENT, req)
        return Capture(amount_cents=0, currency=CURRENCY)

    @activity.defn(name=Step.CHARGE_CANCELLATION_FEE)
    async def charge_cancellation_fee(self, req: FeeRequest) -> Capture:
        self.record(Step.CHARGE_CANCELLATION_FEE, req)
        fee = cancellation_fee_cents(req.assigned_at, req.cancelled_at, req.free_cancel_s,
                                     self._held)
        return Capture(amount_cents=fee, currency=CURRENCY)

    # --- drivers ----------------------------------------------------------------------

    @activity.defn(name=Step.RESERVE_DRIVER)
    async def reserve_driver(self, req: ReserveRequest) -> OfferMade | None:
        self.record(Step.RESERVE_DRIVER, req)
        free = [d for d in self.drivers if d not in req.exclude]
        if not free:
            return None
        offer = OfferMade(offer_id=f"offer-{req.attempt}", driver_id=free[0],
                          expires_at=datetime.now(UTC) + timedelta(seconds=15))
        self.offers.put_nowait(offer)
        return offer

    @activity.defn(name=Step.EXPIRE_OFFER)
    async def expire_offer(self, ref: OfferRef) -> OfferClosed:
        self.record(Step.EXPIRE_OFFER, ref)
        # no driver answers behind the workflow's back here: an expiry expires
        return OfferClosed(outcome="expired")

    @activity.defn(name=Step.DECLINE_OFFER)
    async def decline_offer(self, ref: OfferRef) -> OfferClosed:
        self.record(Step.DECLINE_OFFER, ref)
        return OfferClosed(outcome="declined")

    @activity.defn(name=Step.ASSIGN_DRIVER)
    async def assign_driver(self, ref: OfferRef) -> None:
        self.record(Step.ASSIGN_DRIVER, ref)

    @activity.defn(name=Step.RELEASE_DRIVER)
    async def release_driver(self, req: ReleaseRequest) -> None:
        self.record(Step.RELEASE_DRIVER, req)

    # --- how the ride ended -----------------------------------------------------------

    @activity.defn(name=Step.COMPLETE_RIDE)
    async def complete_ride(self, end: RideEnd) -> None:
        self.record(Step.COMPLETE_RIDE, end)
        if self.fail_completion:
            raise ApplicationError("the ride could not be recorded", non_retryable=True)

    @activity.defn(name=Step.CANCEL_RIDE)
    async def cancel_ride(self, end: RideEnd) -> None:
        self.record(Step.CANCEL_RIDE, end)

    @activity.defn(name=Step.FAIL_RIDE)
    async def fail_ride(self, end: RideEnd) -> None:
        self.record(Step.FAIL_RIDE, end)


def ride_input(ride_id: str, **kw: Any) -> RideInput:
    here = Point(lat=40.75, lng=-73.99)
    there = Point(lat=40.76, lng=-73.97)
    values: dict[str, Any] = dict(ride_id=ride_id, rider_id="r1", pickup=here, dropoff=there,
                                  offer_timeout_s=15, matching_deadline_s=60,
                                  free_cancel_s=120)
    return RideInput(**(values | kw))


async def start_ride(client: Client, ride: RideInput) -> WorkflowHandle[Any, RideOutcome]:
    return await client.start_workflow(RideWorkflow.run, ride, id=f"ride-{ride.ride_id}",
                                       task_queue=TASK_QUEUE)


class Rider:
    """The api events of one ride, as the trigger forwards them (numbered event ids)."""

    def __init__(self, handle: WorkflowHandle[Any, RideOutcome]) -> None:
        self.handle = handle
        self.sent = 0

    async def send(self, type_: str, **data: Any) -> None:
        self.sent += 1
        await self.handle.signal(RIDE_EVENT_SIGNAL,
                                 RideSignal(event_id=f"e{self.sent}", type=type_, data=data))

    async def answer(self, offer: OfferMade, accept: bool = True) -> None:
        verb = "accepted" if accept else "declined"
        await self.send(f"ride.driver_{verb}", offer_id=offer.offer_id,
                        driver_id=offer.driver_id)

    async def cancel(self, by_role: str = "rider", by_id: str = "r1") -> None:
        await self.send("ride.cancellation_requested", by_role=by_role, by_id=by_id,
                        reason=f"{by_role} changed plans")

    async def drive(self, driver: str) -> None:
        await self.send("ride.driver_arrived", driver_id=driver)
        await self.send("ride.trip_started", driver_id=driver)
        await self.send("ride.trip_ended", driver_id=driver, distance_m=2600, duration_s=480)
