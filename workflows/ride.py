"""RideWorkflow: one ride's booking saga (CONTRACT.md sections 4 and 5).

quote fare → authorize payment → match (offer drivers one at a time) → assign → wait for
arrive / start / end → capture → release the driver → completed. Compensations undo
what was done when a later step fails or the ride is cancelled: the driver is released,
the hold voided (or the late-cancellation fee captured), a captured fare refunded.

The workflow decides; it never touches I/O. Api events reach it as ``ride_event``
signals, de-duplicated by event id; activities do the work and publish the facts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from ridehail.domain.status import RideStatus
    from workflows.contract import (
        DRIVER_ID,
        RIDE_EVENT_SIGNAL,
        RIDE_STATUS,
        RIDER_ID,
        STATUS_QUERY,
        WORKFLOW_TYPE,
        Step,
    )
    from workflows.inbox import CancelRequest, Inbox
    from workflows.saga import CompensationFailure, Saga, shielded
    from workflows.steps import failure_of, run_step
    from workflows.types import (
        Authorization,
        AuthorizeRequest,
        Capture,
        CaptureRequest,
        FareQuote,
        FeeRequest,
        OfferMade,
        OfferRef,
        QuoteRequest,
        ReleaseRequest,
        ReserveRequest,
        RideEnd,
        RideInput,
        RideOutcome,
        RideSignal,
        SettleRequest,
    )

# Patch ids (docs/VERSIONING.md). The driver is released before the fare is captured
# (formerly after):
RELEASE_BEFORE_CAPTURE = "release-driver-before-capture"
# The bookkeeping steps run as local activities (workflows/steps.py), the search
# attributes the trigger sets at start are not upserted again, and an assignment's
# driver and status go in one upsert (formerly: every step an activity, and more upserts):
LOCAL_BOOKKEEPING = "local-bookkeeping-steps"

# How long to wait before searching again when no driver is free.
NO_CANDIDATE_RETRY = timedelta(seconds=3)


class _Cancelled(Exception):
    def __init__(self, request: CancelRequest) -> None:
        super().__init__(request.by_role)
        self.request = request


class _NoDriver(Exception):
    pass


class _DriverBackedOut(Exception):
    pass


@workflow.defn(name=WORKFLOW_TYPE)
class RideWorkflow:
    def __init__(self) -> None:
        self._status = RideStatus.REQUESTED
        self._inbox = Inbox()
        self._cancellation: CancelRequest | None = None  # the one that ended the ride
        self._driver_id: str | None = None
        self._assigned_at: datetime | None = None
        self._fee_cents = 0
        self._attempt = 0  # driver searches so far; numbers each offer
        self._releases = 0  # driver releases so far; numbers each release's event
        # drivers who declined, let an offer expire or backed out: not offered again
        self._exclude: list[str] = []

    # --- api events -------------------------------------------------------------------

    @workflow.signal(name=RIDE_EVENT_SIGNAL)
    def ride_event(self, event: RideSignal) -> None:
        self._inbox.receive(event, workflow.now())

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> RideStatus:
        return self._status

    # --- the saga ---------------------------------------------------------------------

    @workflow.run
    async def run(self, ride: RideInput) -> RideOutcome:
        self._ride = ride
        saga = Saga(ride.ride_id)
        self._local = workflow.patched(LOCAL_BOOKKEEPING)
        if not self._local:  # the trigger starts the workflow with these set
            workflow.upsert_search_attributes(
                [
                    RIDE_STATUS.value_set(RideStatus.REQUESTED.value),
                    RIDER_ID.value_set(ride.rider_id),
                ]
            )
        try:
            return await self._book(saga)
        except _Cancelled as c:
            self._cancellation = c.request
            ending = self._end_cancelled(saga)
        except _NoDriver:
            ending = self._end_failed(saga, "no_driver_available", None)
        except ActivityError as e:
            ending = self._end_failed(saga, *failure_of(e))
        except asyncio.CancelledError:
            ending = self._end_failed(saga, "workflow_cancelled", "the workflow was cancelled")
        # Compensating and recording the end must finish even if the workflow is
        # cancelled meanwhile (from the Temporal UI, say).
        return await shielded(ending)

    async def _book(self, saga: Saga) -> RideOutcome:
        ride = self._ride
        quote = await self._step(
            Step.QUOTE_FARE,
            QuoteRequest(
                ride_id=ride.ride_id,
                rider_id=ride.rider_id,
                pickup=ride.pickup,
                dropoff=ride.dropoff,
                quote_id=ride.quote_id,
            ),
            FareQuote,
            summary="price the ride" + (f" from quote {ride.quote_id}" if ride.quote_id else ""),
        )
        # registered before the step: an authorization can go through and its answer
        # still be lost; the void looks at the ledger and does nothing if there is no hold
        saga.add("settle the hold", self._settle_hold)
        await self._step(
            Step.AUTHORIZE_PAYMENT,
            AuthorizeRequest(ride_id=ride.ride_id, payment_method=ride.payment_method, quote=quote),
            Authorization,
            summary=f"hold payment for a {quote.fare_cents / 100:.2f} {quote.currency} fare",
        )
        saga.add("release the driver", self._release_on_ending)
        while True:
            await self._match(quote)
            try:
                trip = await self._trip()
                break
            except _DriverBackedOut:
                await self._back_to_matching()

        saga.add("refund the fare", self._refund)

        async def capture_fare() -> Capture:
            captured = await self._step(
                Step.CAPTURE_PAYMENT,
                CaptureRequest(
                    ride_id=ride.ride_id,
                    quote=quote,
                    distance_m=trip.distance_m,
                    duration_s=trip.duration_s,
                ),
                Capture,
                summary=f"capture the final fare ({trip.distance_m} m, {trip.duration_s} s)",
            )
            saga.discard("settle the hold")  # the capture settled it; a refund undoes it now
            return captured

        async def free_driver() -> None:
            await self._release("trip_completed")
            saga.discard("release the driver")

        # (rides with local steps came later: they always release first, no second patch)
        if self._local or workflow.patched(RELEASE_BEFORE_CAPTURE):
            # The driver is free for the next rider as soon as the trip ends, instead of
            # waiting for the payment gateway (docs/VERSIONING.md).
            await free_driver()
            capture = await capture_fare()
        else:  # rides that reached the end of their trip before this change
            capture = await capture_fare()
            await free_driver()
        await self._step(
            Step.COMPLETE_RIDE,
            RideEnd(
                ride_id=ride.ride_id,
                final_fare_cents=capture.amount_cents,
                currency=capture.currency,
                distance_m=trip.distance_m,
                duration_s=trip.duration_s,
            ),
            summary="record the completed ride",
        )
        charged = f"Completed, charged {capture.amount_cents / 100:.2f}"
        self._set_status(RideStatus.COMPLETED, charged)
        return self._outcome(final_fare_cents=capture.amount_cents)

    # --- matching ---------------------------------------------------------------------

    async def _match(self, quote: FareQuote) -> None:
        """Offer the ride to the nearest free driver, one at a time, until one accepts;
        raises _NoDriver at the matching deadline."""
        ride = self._ride
        self._set_status(RideStatus.MATCHING, "Looking for a driver")
        deadline = workflow.now() + timedelta(seconds=ride.matching_deadline_s)
        while True:
            self._raise_if_cancelled()
            remaining = (deadline - workflow.now()).total_seconds()
            if remaining <= 0:
                raise _NoDriver()
            self._attempt += 1
            attempt = self._attempt
            offer: OfferMade | None = await self._step(
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
            if offer is None:
                workflow.set_current_details(
                    f"No free driver nearby; searching again ({remaining:.0f} s left)"
                )
                await self._wait_for(
                    lambda e: False, timeout=min(NO_CANDIDATE_RETRY.total_seconds(), remaining)
                )
                continue
            ref = OfferRef(ride_id=ride.ride_id, offer_id=offer.offer_id, driver_id=offer.driver_id)
            workflow.set_current_details(
                f"Offered to driver {offer.driver_id}; waiting up to "
                f"{ride.offer_timeout_s:.0f} s for an answer"
            )

            def answers(e: RideSignal, offer_id: str = offer.offer_id) -> bool:
                return (
                    e.type in ("ride.driver_accepted", "ride.driver_declined")
                    and e.data.get("offer_id") == offer_id
                )

            answer = await self._wait_for(answers, timeout=ride.offer_timeout_s)
            if answer is not None and answer.type == "ride.driver_accepted":
                self._driver_id = offer.driver_id
                self._assigned_at = workflow.now()
                await self._step(
                    Step.ASSIGN_DRIVER, ref, summary=f"assign driver {offer.driver_id} to the ride"
                )
                assigned = DRIVER_ID.value_set(offer.driver_id)
                on_the_way = f"Driver {offer.driver_id} on the way to pickup"
                if self._local:  # one upsert for driver and status
                    self._set_status(RideStatus.DRIVER_ASSIGNED, on_the_way, assigned)
                else:
                    workflow.upsert_search_attributes([assigned])
                    self._set_status(RideStatus.DRIVER_ASSIGNED, on_the_way)
                return
            declined = answer is not None
            await self._step(
                Step.DECLINE_OFFER if declined else Step.EXPIRE_OFFER,
                ref,
                summary=f"{'declined' if declined else 'expired'}: free driver "
                f"{offer.driver_id} for other rides",
            )
            self._exclude.append(offer.driver_id)

    async def _back_to_matching(self) -> None:
        """The assigned driver cancelled before the trip started: free them, never offer
        them this ride again, and look for another driver."""
        driver = self._driver_id
        await self._release("driver_cancelled")
        if driver is not None:
            self._exclude.append(driver)
        self._driver_id = None
        self._assigned_at = None
        workflow.upsert_search_attributes([DRIVER_ID.value_unset()])

    # --- the trip ---------------------------------------------------------------------

    async def _trip(self) -> _Trip:
        """Wait for the assigned driver's reports; returns the trip's distance and time."""
        driver = self._driver_id

        def reported(kind: str) -> Callable[[RideSignal], bool]:
            return lambda e: e.type == kind and e.data.get("driver_id") == driver

        await self._wait_for(reported("ride.driver_arrived"), backout=True)
        self._set_status(RideStatus.DRIVER_ARRIVED, f"Driver {driver} at pickup")
        await self._wait_for(reported("ride.trip_started"), backout=True)
        self._set_status(RideStatus.IN_PROGRESS, f"On the trip with driver {driver}")
        ended = await self._wait_for(reported("ride.trip_ended"))
        assert ended is not None  # no timeout: only a cancellation ends the wait otherwise
        return _Trip(int(ended.data["distance_m"]), int(ended.data["duration_s"]))

    # --- endings ----------------------------------------------------------------------

    async def _end_cancelled(self, saga: Saga) -> RideOutcome:
        c = self._cancellation
        assert c is not None
        failures = await saga.compensate()
        if failures:
            return await self._record_failure(
                "compensation_failed", f"cancelled by the {c.by_role}, then {_describe(failures)}"
            )
        fee = self._fee_cents or None
        await self._step(
            Step.CANCEL_RIDE,
            RideEnd(
                ride_id=self._ride.ride_id,
                by_role=c.by_role,
                reason=c.reason,
                cancellation_fee_cents=fee,
            ),
            summary=f"record the cancellation by the {c.by_role}",
        )
        by = f"Cancelled by the {c.by_role}" + (f", fee {fee / 100:.2f}" if fee else "")
        self._set_status(RideStatus.CANCELLED, by)
        return self._outcome(cancellation_fee_cents=fee)

    async def _end_failed(self, saga: Saga, reason: str, detail: str | None) -> RideOutcome:
        failures = await saga.compensate()
        if failures:
            detail = f"{reason}{f' ({detail})' if detail else ''}, then {_describe(failures)}"
            reason = "compensation_failed"
        return await self._record_failure(reason, detail)

    async def _record_failure(self, reason: str, detail: str | None) -> RideOutcome:
        log = (
            workflow.logger.error
            if reason in ("compensation_failed", "step_failed")
            else workflow.logger.warning
        )
        log("ride %s failed: %s%s", self._ride.ride_id, reason, f" — {detail}" if detail else "")
        await self._step(
            Step.FAIL_RIDE,
            RideEnd(ride_id=self._ride.ride_id, reason=reason, detail=detail),
            summary=f"record the failure: {reason}",
        )
        self._set_status(RideStatus.FAILED, f"Failed: {reason}")
        return self._outcome(failure_reason=reason)

    # --- compensations ----------------------------------------------------------------

    async def _settle_hold(self) -> None:
        """Release the hold — or, when the rider cancels after a driver was assigned,
        charge the cancellation fee (nothing inside the free window: then it is a void
        too; the fee rule lives with payments)."""
        ride = self._ride
        c = self._cancellation
        if c is not None and c.by_role == "rider" and self._assigned_at is not None:
            fee: Capture = await self._step(
                Step.CHARGE_CANCELLATION_FEE,
                FeeRequest(
                    ride_id=ride.ride_id,
                    assigned_at=self._assigned_at,
                    cancelled_at=c.at,
                    free_cancel_s=ride.free_cancel_s,
                ),
                Capture,
                compensation=True,
                summary="charge the late-cancellation fee, or release the hold",
            )
            self._fee_cents = fee.amount_cents
            return
        await self._step(
            Step.VOID_PAYMENT,
            SettleRequest(ride_id=ride.ride_id),
            compensation=True,
            summary="release the payment hold",
        )

    async def _release_on_ending(self) -> None:
        c = self._cancellation
        await self._release(f"{c.by_role}_cancelled" if c else "ride_failed", compensation=True)

    async def _release(self, reason: str, *, compensation: bool = False) -> None:
        """Free whichever driver the ride holds (an offered or an assigned one)."""
        self._releases += 1
        await self._step(
            Step.RELEASE_DRIVER,
            ReleaseRequest(ride_id=self._ride.ride_id, reason=reason, step=str(self._releases)),
            compensation=compensation,
            summary=f"release the driver ({reason})",
        )

    async def _refund(self) -> None:
        """A ride that does not complete keeps none of the rider's money."""
        await self._step(
            Step.REFUND_PAYMENT,
            SettleRequest(ride_id=self._ride.ride_id, reason="ride did not complete"),
            Capture,
            compensation=True,
            summary="refund the captured fare",
        )

    # --- helpers ----------------------------------------------------------------------

    async def _wait_for(
        self,
        pred: Callable[[RideSignal], bool],
        timeout: float | None = None,
        backout: bool = False,
    ) -> RideSignal | None:
        """The first waiting api event matching ``pred`` (taken from the inbox); None on
        timeout. A cancellation request ends the wait: raises _Cancelled, or — for the
        assigned driver's own before the trip starts (``backout``) — _DriverBackedOut."""
        inbox = self._inbox
        try:
            await workflow.wait_condition(
                lambda: (
                    inbox.live_cancel(self._driver_id) is not None or inbox.find(pred) is not None
                ),
                timeout=timeout,
            )
        except TimeoutError:
            return None
        cancel = inbox.live_cancel(self._driver_id)
        if cancel is not None:
            if backout and cancel.by_role == "driver":
                inbox.forget_driver_cancels(cancel.by_id)
                raise _DriverBackedOut()
            raise _Cancelled(cancel)
        return inbox.take(pred)

    def _step(
        self, name: str, arg: BaseModel, result_type: type[BaseModel] | None = None, **kw: Any
    ) -> Awaitable[Any]:
        return run_step(name, arg, result_type, local=self._local, **kw)

    def _raise_if_cancelled(self) -> None:
        cancel = self._inbox.live_cancel(self._driver_id)
        if cancel is not None:
            raise _Cancelled(cancel)

    def _set_status(
        self, status: RideStatus, details: str, *more: SearchAttributeUpdate[Any]
    ) -> None:
        self._status = status
        workflow.upsert_search_attributes([RIDE_STATUS.value_set(status.value), *more])
        workflow.set_current_details(details)

    def _outcome(self, **kw: Any) -> RideOutcome:
        return RideOutcome(
            ride_id=self._ride.ride_id, status=self._status, driver_id=self._driver_id, **kw
        )


@dataclass(frozen=True)
class _Trip:
    distance_m: int
    duration_s: int


def _describe(failures: list[CompensationFailure]) -> str:
    return "compensation failed: " + "; ".join(f"{f.name}: {f.error}" for f in failures)
