"""Matching and the trip: find a driver, then follow the trip — a helper that
``RideWorkflow`` (in ``workflows.ride``) creates when the ride starts and owns; the
workflow adds the saga around it: payment, compensations and endings.

The ride is offered to the nearest free driver, one at a time, until one accepts (or the
matching deadline passes); then the workflow waits for the assigned driver's arrive /
start / end reports. An assigned driver who backs out before the trip starts is released
and never offered the ride again, and matching starts over.

What the workflow and its matching both read and write — the api events waiting, the
status, the assigned driver, when the trip started — is the ride's ``RideState``, which
the workflow creates and hands to its matching. A cancellation request ends any wait
here: it raises ``Cancelled``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

from domain.status import RideStatus
from workflows.contract import DRIVER_ID, RIDE_STATUS, Step
from workflows.inbox import CancelRequest, Inbox
from workflows.patches import Patches
from workflows.steps import StepRunner
from workflows.types import (
    FareQuote,
    OfferClosed,
    OfferMade,
    OfferRef,
    ReleaseRequest,
    ReserveRequest,
    RideInput,
    RideSignal,
)

# How long to wait before searching again when no driver is free.
NO_CANDIDATE_RETRY = timedelta(seconds=3)


class Cancelled(Exception):
    def __init__(self, request: CancelRequest) -> None:
        super().__init__(request.by_role)
        self.request = request


class NoDriver(Exception):
    """The matching deadline passed with no driver accepting."""


class DriverBackedOut(Exception):
    """The assigned driver cancelled before the trip started."""


@dataclass(frozen=True)
class Trip:
    distance_m: int  # as the driver reported them
    duration_s: int
    started_at: datetime | None = None  # trip_started's and trip_ended's event times
    ended_at: datetime | None = None


@dataclass
class RideState:
    """What the ride's workflow knows and its matching reads and writes. Created with the
    workflow, before the ride starts: signals and the status query can come first."""

    inbox: Inbox = field(default_factory=Inbox)  # the api events heard, not yet acted on
    status: RideStatus = RideStatus.REQUESTED
    driver_id: str | None = None  # the assigned driver
    assigned_at: datetime | None = None
    trip_started_at: datetime | None = None

    def set_status(
        self, status: RideStatus, details: str, *more: SearchAttributeUpdate[Any]
    ) -> None:
        """The ride's status, its search attribute (with ``more`` in the same upsert) and
        the workflow's current details in the Temporal UI."""
        self.status = status
        workflow.upsert_search_attributes([RIDE_STATUS.value_set(status.value), *more])
        workflow.set_current_details(details)

    def live_cancel(self) -> CancelRequest | None:
        """The cancellation request that applies to the ride now, if any."""
        return self.inbox.live_cancel(self.driver_id)

    def raise_if_cancelled(self) -> None:
        cancel = self.live_cancel()
        if cancel is not None:
            raise Cancelled(cancel)


class Matching:
    """Matching and the trip for one ride. Workflow code only: ``RideWorkflow`` creates
    it once the ride's patches are decided, and frees drivers through it (``release``)."""

    def __init__(
        self, ride: RideInput, state: RideState, patches: Patches, step: StepRunner
    ) -> None:
        self._ride = ride
        self._state = state
        self._patches = patches
        self._step = step
        self._attempt = 0  # driver searches so far; numbers each offer
        self._releases = 0  # driver releases so far; numbers each release's event
        # drivers who declined, let an offer expire or backed out: not offered again
        self._exclude: list[str] = []

    async def match_and_drive(self, quote: FareQuote) -> Trip:
        """Match a driver and follow the trip to its end; rematch when the assigned
        driver backs out."""
        while True:
            await self._match(quote)
            try:
                return await self._trip()
            except DriverBackedOut:
                await self._back_to_matching()

    async def release(self, reason: str, *, compensation: bool = False) -> None:
        """Free whichever driver the ride holds (an offered or an assigned one)."""
        self._releases += 1
        await self._step(
            Step.RELEASE_DRIVER,
            ReleaseRequest(ride_id=self._ride.ride_id, reason=reason, step=str(self._releases)),
            compensation=compensation,
            summary=f"release the driver ({reason})",
        )

    # --- matching ---------------------------------------------------------------------

    async def _match(self, quote: FareQuote) -> None:
        """Offer the ride to the nearest free driver, one at a time, until one accepts;
        raises NoDriver at the matching deadline."""
        self._state.set_status(RideStatus.MATCHING, "Looking for a driver")
        deadline = workflow.now() + timedelta(seconds=self._ride.matching_deadline_s)
        while True:
            self._state.raise_if_cancelled()
            remaining = (deadline - workflow.now()).total_seconds()
            if remaining <= 0:
                raise NoDriver()
            offer = await self._reserve_driver(quote)
            if offer is None:
                workflow.set_current_details(
                    f"No free driver nearby; searching again ({remaining:.0f} s left)"
                )
                await self._pause(min(NO_CANDIDATE_RETRY.total_seconds(), remaining))
                continue
            if await self._offer(offer):
                return

    async def _offer(self, offer: OfferMade) -> bool:
        """Wait for the driver's answer to ``offer``: True when they accepted (they are
        assigned), False when they declined or the offer expired (they are freed, and
        not offered the ride again)."""
        ride = self._ride
        ref = OfferRef(ride_id=ride.ride_id, offer_id=offer.offer_id, driver_id=offer.driver_id)
        workflow.set_current_details(
            f"Offered to driver {offer.driver_id}; waiting up to "
            f"{ride.offer_timeout_s:.0f} s for an answer"
        )
        judged = self._patches.committed_facts
        answer = await self._wait_for(
            _answers(offer),
            timeout=ride.offer_timeout_s,
            timeout_summary=f"offer to driver {offer.driver_id} expires: the ride goes to "
            "the next driver" if judged else None,
        )
        if answer is None and judged:
            answer = await self._answered_in_time(offer, ref)
            if answer is None:  # expired, and the expiry freed the driver
                self._exclude.append(offer.driver_id)
                return False
        if answer is not None and answer.type == "ride.driver_accepted":
            await self._assign(offer, ref)
            return True
        declined = answer is not None
        await self._step(
            Step.DECLINE_OFFER if declined else Step.EXPIRE_OFFER,
            ref,
            summary=f"{'declined' if declined else 'expired'}: free driver "
            f"{offer.driver_id} for other rides",
        )
        self._exclude.append(offer.driver_id)
        return False

    async def _answered_in_time(self, offer: OfferMade, ref: OfferRef) -> RideSignal | None:
        """The offer timed out here. Expire it — unless the driver answered before it
        expired (the api records the answer with its event) and the answer is still on
        its way: then wait for it, and it counts. None when the offer expired."""
        closed = await self._step(
            Step.EXPIRE_OFFER,
            ref.model_copy(update={"honour_answer": True}),
            OfferClosed,
            summary=f"expire driver {offer.driver_id}'s offer, unless answered in time",
        )
        if closed.outcome == "expired":
            return None
        return await self._wait_for(_answers(offer))

    async def _reserve_driver(self, quote: FareQuote) -> OfferMade | None:
        """Reserve the nearest free driver not excluded and offer them the ride; None
        when there is none."""
        ride = self._ride
        self._attempt += 1
        attempt = self._attempt
        return await self._step(
            Step.RESERVE_DRIVER,
            ReserveRequest(
                ride_id=ride.ride_id,
                rider_id=ride.rider_id,
                pickup=ride.pickup,
                dropoff=ride.dropoff,
                fare_cents=quote.fare_cents,
                currency=quote.currency,
                attempt=attempt,
                exclude=self._exclude,
                offer_timeout_s=ride.offer_timeout_s,
            ),
            OfferMade,
            optional=True,
            summary=f"find and reserve the nearest free driver (search {attempt})",
        )

    async def _assign(self, offer: OfferMade, ref: OfferRef) -> None:
        state = self._state
        state.driver_id = offer.driver_id
        state.assigned_at = workflow.now()
        await self._step(
            Step.ASSIGN_DRIVER, ref, summary=f"assign driver {offer.driver_id} to the ride"
        )
        assigned = DRIVER_ID.value_set(offer.driver_id)
        on_the_way = f"Driver {offer.driver_id} on the way to pickup"
        if self._patches.local_steps:  # one upsert for driver and status
            state.set_status(RideStatus.DRIVER_ASSIGNED, on_the_way, assigned)
        else:
            workflow.upsert_search_attributes([assigned])
            state.set_status(RideStatus.DRIVER_ASSIGNED, on_the_way)

    async def _back_to_matching(self) -> None:
        """The assigned driver cancelled before the trip started: free them, never offer
        them this ride again, and look for another driver."""
        state = self._state
        driver = state.driver_id
        await self.release("driver_cancelled")
        if driver is not None:
            self._exclude.append(driver)
        state.driver_id = None
        state.assigned_at = None
        workflow.upsert_search_attributes([DRIVER_ID.value_unset()])

    # --- the trip ---------------------------------------------------------------------

    async def _trip(self) -> Trip:
        """Wait for the assigned driver's reports; returns the trip's distance and time."""
        state = self._state
        driver = state.driver_id

        def reported(kind: str) -> Callable[[RideSignal], bool]:
            return lambda e: e.type == kind and e.data.get("driver_id") == driver

        await self._wait_for(reported("ride.driver_arrived"), backout=True)
        state.set_status(RideStatus.DRIVER_ARRIVED, f"Driver {driver} at pickup")
        started = await self._wait_for(reported("ride.trip_started"), backout=True)
        assert started is not None  # no timeout
        state.trip_started_at = started.time or workflow.now()
        state.set_status(RideStatus.IN_PROGRESS, f"On the trip with driver {driver}")
        ended = await self._wait_for(reported("ride.trip_ended"))
        assert ended is not None  # no timeout: only a cancellation ends the wait otherwise
        return Trip(int(ended.data["distance_m"]), int(ended.data["duration_s"]),
                    started_at=state.trip_started_at, ended_at=ended.time or workflow.now())

    # --- waiting ----------------------------------------------------------------------

    async def _wait_for(
        self,
        pred: Callable[[RideSignal], bool],
        timeout: float | None = None,
        backout: bool = False,
        timeout_summary: str | None = None,
    ) -> RideSignal | None:
        """The first waiting api event matching ``pred`` (taken from the inbox); None on
        timeout (``timeout_summary`` names the timer in the history). A cancellation
        request ends the wait: raises Cancelled, or — for the assigned driver's own before
        the trip starts (``backout``) — DriverBackedOut."""
        state = self._state
        try:
            await workflow.wait_condition(
                lambda: state.live_cancel() is not None or state.inbox.find(pred) is not None,
                timeout=timeout,
                timeout_summary=timeout_summary,
            )
        except TimeoutError:
            return None
        cancel = state.live_cancel()
        if cancel is not None:
            if backout and cancel.by_role == "driver":
                state.inbox.forget_driver_cancels(cancel.by_id)
                raise DriverBackedOut()
            raise Cancelled(cancel)
        return state.inbox.take(pred)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` — one timer in the history — unless a cancellation request
        comes first: then the timer is cancelled and Cancelled raised. (A plain
        ``workflow.sleep`` would not hear the cancellation until the timer fired.)"""
        await self._wait_for(_nothing, timeout=seconds)


def _answers(offer: OfferMade) -> Callable[[RideSignal], bool]:
    """The driver's answer to this offer (and not to an earlier one)."""

    def answer(e: RideSignal) -> bool:
        return (
            e.type in ("ride.driver_accepted", "ride.driver_declined")
            and e.data.get("offer_id") == offer.offer_id
        )

    return answer


def _nothing(_: RideSignal) -> bool:
    return False
