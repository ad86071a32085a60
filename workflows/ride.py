"""RideWorkflow: one ride's booking saga (CONTRACT.md sections 4 and 5).

quote fare → authorize payment → match (offer drivers one at a time) → assign → wait for
arrive / start / end → release the driver → capture → completed. Compensations undo
what was done when a later step fails or the ride is cancelled: the driver is released,
the hold voided (or the late-cancellation fee captured), a captured fare refunded.

The workflow decides; it never touches I/O. Api events reach it as signals named for
their type (``driver_accepted``, ``trip_ended`` …; ``ride_event`` from older triggers),
de-duplicated by event id (``workflows.inbox``), each with the time the api committed
it; activities do the work and publish the facts. Matching and the trip are a helper
the workflow creates when the ride starts and owns (``workflows.matching.Matching``); what
both read and write is the ride's ``RideState``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from domain.status import RideStatus
    from workflows.contract import (
        EVENT_SIGNALS,
        RIDE_EVENT_SIGNAL,
        RIDE_STATUS,
        RIDER_ID,
        STATUS_QUERY,
        WORKFLOW_TYPE,
        Step,
    )
    from workflows.inbox import CancelRequest
    from workflows.matching import Cancelled, Matching, NoDriver, RideState, Trip
    from workflows.patches import Patches
    from workflows.saga import CompensationFailure, Saga, shielded
    from workflows.steps import StepRunner, failure_of
    from workflows.types import (
        Authorization,
        AuthorizeRequest,
        Capture,
        CaptureRequest,
        FareAdjustment,
        FareQuote,
        FeeRequest,
        QuoteRequest,
        RideEnd,
        RideInput,
        RideOutcome,
        RideSignal,
        SettleRequest,
    )

# The compensations, by the names failures are reported with.
SETTLE_HOLD = "settle the hold"
RELEASE_DRIVER = "release the driver"
REFUND_FARE = "refund the fare"


@workflow.defn(name=WORKFLOW_TYPE)
class RideWorkflow:
    """One ride's saga, and the handlers of the signals and the query that reach it.
    Matching and the trip are its ``Matching``, created where the ride starts."""

    # Set where the ride starts (``run``), before its first step.
    _ride: RideInput
    _patches: Patches
    _step: StepRunner
    _matching: Matching

    def __init__(self) -> None:
        # Signals and the status query can come before the ride starts.
        self._state = RideState()
        self._cancellation: CancelRequest | None = None  # the one that ended the ride
        self._fee_cents = 0
        self._cut_short_fare: Capture | None = None  # a trip in progress, cancelled
        self._quote: FareQuote | None = None

    # --- api events: one signal per kind, and the one every kind used to come as --------

    def _receive(self, event: RideSignal) -> None:
        self._state.inbox.receive(event, workflow.now())

    @workflow.signal(name=RIDE_EVENT_SIGNAL)
    def ride_event(self, event: RideSignal) -> None:
        self._receive(event)

    @workflow.signal(name=EVENT_SIGNALS["ride.cancellation_requested"])
    def cancellation_requested(self, event: RideSignal) -> None:
        self._receive(event)

    @workflow.signal(name=EVENT_SIGNALS["ride.driver_accepted"])
    def driver_accepted(self, event: RideSignal) -> None:
        self._receive(event)

    @workflow.signal(name=EVENT_SIGNALS["ride.driver_declined"])
    def driver_declined(self, event: RideSignal) -> None:
        self._receive(event)

    @workflow.signal(name=EVENT_SIGNALS["ride.driver_arrived"])
    def driver_arrived(self, event: RideSignal) -> None:
        self._receive(event)

    @workflow.signal(name=EVENT_SIGNALS["ride.trip_started"])
    def trip_started(self, event: RideSignal) -> None:
        self._receive(event)

    @workflow.signal(name=EVENT_SIGNALS["ride.trip_ended"])
    def trip_ended(self, event: RideSignal) -> None:
        self._receive(event)

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> RideStatus:
        return self._state.status

    # --- the saga ---------------------------------------------------------------------

    @workflow.run
    async def run(self, ride: RideInput) -> RideOutcome:
        self._ride = ride
        saga = Saga(ride.ride_id)
        self._patches = Patches()
        self._step = StepRunner(local=self._patches.local_steps)
        self._matching = Matching(ride, self._state, self._patches, self._step)
        if not self._patches.local_steps:  # the trigger starts the workflow with these set
            workflow.upsert_search_attributes(
                [
                    RIDE_STATUS.value_set(RideStatus.REQUESTED.value),
                    RIDER_ID.value_set(ride.rider_id),
                ]
            )
        try:
            if self._patches.committed_facts:
                # The saga can be started by a later event of the ride (the trigger's
                # signal-with-start, when the request itself was held up): a cancel
                # already here ends the ride before any hold or offer.
                self._state.raise_if_cancelled()
            return await self._book(saga)
        except Cancelled as cancelled:
            self._cancellation = cancelled.request
            ending = self._end_cancelled(saga)
        except NoDriver:
            ending = self._end_failed(saga, "no_driver_available", None)
        except ActivityError as e:
            ending = self._end_failed(saga, *failure_of(e))
        except asyncio.CancelledError:
            ending = self._end_failed(saga, "workflow_cancelled", "the workflow was cancelled")
        # Compensating and recording the end must finish even if the workflow is
        # cancelled meanwhile (from the Temporal UI, say).
        return await shielded(ending)

    async def _book(self, saga: Saga) -> RideOutcome:
        """The spine: each step, and the undo registered before the step it undoes."""
        quote = self._quote = await self._quote_fare()
        # An authorization can go through and its answer still be lost: the undo is
        # registered first, and the void does nothing if the ledger has no hold.
        saga.add(SETTLE_HOLD, self._settle_hold)
        await self._authorize_payment(quote)
        saga.add(RELEASE_DRIVER, self._release_on_ending)
        trip = await self._matching.match_and_drive(quote)
        saga.add(REFUND_FARE, self._refund)
        if self._patches.release_before_capture():
            # The driver is free for the next rider as soon as the trip ends, instead of
            # waiting for the payment gateway (docs/VERSIONING.md).
            await self._free_driver(saga)
            capture = await self._capture_fare(quote, trip, saga)
        else:  # rides whose trip ended before the RELEASE_BEFORE_CAPTURE patch was deployed
            capture = await self._capture_fare(quote, trip, saga)
            await self._free_driver(saga)
        await self._record_completed(capture, trip)
        return self._outcome(final_fare_cents=capture.amount_cents)

    # --- the forward steps ------------------------------------------------------------

    async def _quote_fare(self) -> FareQuote:
        ride = self._ride
        return await self._step(
            Step.QUOTE_FARE,
            QuoteRequest(
                ride_id=ride.ride_id,
                rider_id=ride.rider_id,
                pickup=ride.pickup,
                dropoff=ride.dropoff,
                quote_id=ride.quote_id,
                requested_at=ride.requested_at,
            ),
            FareQuote,
            summary="price the ride" + (f" from quote {ride.quote_id}" if ride.quote_id else ""),
        )

    async def _authorize_payment(self, quote: FareQuote) -> Authorization:
        ride = self._ride
        return await self._step(
            Step.AUTHORIZE_PAYMENT,
            AuthorizeRequest(ride_id=ride.ride_id, payment_method=ride.payment_method, quote=quote),
            Authorization,
            summary=f"hold payment for a {quote.fare_cents / 100:.2f} {quote.currency} fare",
        )

    async def _free_driver(self, saga: Saga) -> None:
        await self._matching.release("trip_completed")
        saga.discard(RELEASE_DRIVER)

    async def _capture_fare(self, quote: FareQuote, trip: Trip, saga: Saga) -> Capture:
        reported = f"{trip.distance_m} m, {trip.duration_s} s"
        metered = self._patches.committed_facts
        captured = await self._step(
            Step.CAPTURE_PAYMENT,
            CaptureRequest(
                ride_id=self._ride.ride_id,
                quote=quote,
                distance_m=trip.distance_m,
                duration_s=trip.duration_s,
                metered=metered,
                started_at=trip.started_at if metered else None,
                ended_at=trip.ended_at if metered else None,
            ),
            Capture,
            summary=f"capture the final fare (driver reported {reported}; checked against "
            "the trip meter)" if metered else f"capture the final fare ({reported})",
        )
        saga.discard(SETTLE_HOLD)  # the capture settled it; a refund undoes it now
        return captured

    async def _record_completed(self, capture: Capture, trip: Trip) -> None:
        used = capture.used
        adjusted: FareAdjustment | None = capture.adjusted
        await self._step(
            Step.COMPLETE_RIDE,
            RideEnd(
                ride_id=self._ride.ride_id,
                final_fare_cents=capture.amount_cents,
                currency=capture.currency,
                distance_m=used.distance_m if used else trip.distance_m,
                duration_s=used.duration_s if used else trip.duration_s,
                fare_adjusted=adjusted,
            ),
            summary="record the completed ride",
        )
        charged = f"Completed, charged {capture.amount_cents / 100:.2f}"
        self._state.set_status(RideStatus.COMPLETED, charged)

    # --- endings ----------------------------------------------------------------------

    async def _end_cancelled(self, saga: Saga) -> RideOutcome:
        cancel = self._cancellation
        assert cancel is not None
        failures = await saga.compensate()
        if failures:
            return await self._record_failure(
                "compensation_failed",
                f"cancelled by the {cancel.by_role}, then {_describe(failures)}",
            )
        fee = self._fee_cents or None
        fare = self._cut_short_fare
        await self._step(
            Step.CANCEL_RIDE,
            RideEnd(
                ride_id=self._ride.ride_id,
                by_role=cancel.by_role,
                reason=cancel.reason,
                cancellation_fee_cents=fee,
                final_fare_cents=fare.amount_cents if fare else None,
                distance_m=fare.used.distance_m if fare and fare.used else None,
                duration_s=fare.used.duration_s if fare and fare.used else None,
                fare_adjusted=fare.adjusted if fare else None,
            ),
            summary=f"record the cancellation by the {cancel.by_role}",
        )
        by = f"Cancelled by the {cancel.by_role}" + (f", fee {fee / 100:.2f}" if fee else "")
        if fare:
            by += f", charged {fare.amount_cents / 100:.2f} for the trip so far"
        self._state.set_status(RideStatus.CANCELLED, by)
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
        self._state.set_status(RideStatus.FAILED, f"Failed: {reason}")
        return self._outcome(failure_reason=reason)

    # --- compensations ----------------------------------------------------------------

    async def _settle_hold(self) -> None:
        """Release the hold — or, when the rider cancels after a driver was assigned,
        charge the cancellation fee (nothing inside the free window: then it is a void
        too; the fee rule lives with payments)."""
        ride = self._ride
        cancel = self._cancellation
        by_event_time = self._patches.committed_facts
        started_at, assigned_at = self._state.trip_started_at, self._state.assigned_at
        if cancel is not None and by_event_time and started_at is not None:
            await self._charge_trip_so_far(cancel, started_at)
            return
        if cancel is not None and cancel.by_role == "rider" and assigned_at is not None:
            fee = await self._step(
                Step.CHARGE_CANCELLATION_FEE,
                FeeRequest(
                    ride_id=ride.ride_id,
                    assigned_at=assigned_at,
                    # when the rider asked, not when the workflow heard (CONTRACT.md §5)
                    cancelled_at=cancel.asked_at(by_event_time),
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

    async def _charge_trip_so_far(self, cancel: CancelRequest, started_at: datetime) -> None:
        """A trip in progress that is cancelled (by the rider or an admin) is charged
        what the meter says so far: metered distance, time from the start to the cancel."""
        assert self._quote is not None  # quoted before any driver was matched
        self._cut_short_fare = await self._step(
            Step.CAPTURE_PAYMENT,
            CaptureRequest(
                ride_id=self._ride.ride_id,
                quote=self._quote,
                distance_m=0,
                duration_s=0,
                metered=True,
                started_at=started_at,
                ended_at=cancel.asked_at(True),
                cut_short=True,
            ),
            Capture,
            compensation=True,
            summary=f"charge the metered trip so far (cancelled by the {cancel.by_role})",
        )

    async def _release_on_ending(self) -> None:
        cancel = self._cancellation
        reason = f"{cancel.by_role}_cancelled" if cancel else "ride_failed"
        await self._matching.release(reason, compensation=True)

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

    def _outcome(self, **kw: Any) -> RideOutcome:
        return RideOutcome(
            ride_id=self._ride.ride_id,
            status=self._state.status,
            driver_id=self._state.driver_id,
            **kw,
        )


def _describe(failures: list[CompensationFailure]) -> str:
    return "compensation failed: " + "; ".join(f"{f.name}: {f.error}" for f in failures)

