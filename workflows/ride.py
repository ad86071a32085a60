"""RideWorkflow: one ride's booking saga (CONTRACT.md sections 4 and 5).

quote fare → authorize payment → match (offer drivers one at a time) → assign → wait for
arrive / start / end → capture → release the driver → completed; compensations undo
what was done when a later step fails or the ride is cancelled.

The workflow decides; it never touches I/O. Api events reach it as ``ride_event``
signals, de-duplicated by event id; activities do the work and publish the facts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from workflows.saga import Saga
    from workflows.types import (
        WORKFLOW_TYPE,
        A,
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

RIDE_STATUS = SearchAttributeKey.for_keyword("RideStatus")
RIDER_ID = SearchAttributeKey.for_keyword("RiderId")
DRIVER_ID = SearchAttributeKey.for_keyword("DriverId")

PAYMENT_DECLINED = "PaymentDeclined"
# How long to wait before searching again when no driver is free.
NO_CANDIDATE_RETRY = timedelta(seconds=3)

# Forward steps retry until they succeed: a transient outage (database, NATS) must not
# end a ride. Compensations give up after a bound so a permanent failure is surfaced.
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=[PAYMENT_DECLINED],
)
COMPENSATION_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=8,
)

R = TypeVar("R", bound=BaseModel)


class _Cancelled(Exception):
    def __init__(self, by_role: str, reason: str | None) -> None:
        super().__init__(by_role)
        self.by_role = by_role
        self.reason = reason


class _NoDriver(Exception):
    pass


class _DriverBackedOut(Exception):
    pass


@workflow.defn(name=WORKFLOW_TYPE)
class RideWorkflow:
    def __init__(self) -> None:
        self._status = "requested"
        self._inbox: list[RideSignal] = []
        self._seen: set[str] = set()
        self._cancel: RideSignal | None = None
        self._driver_id: str | None = None
        self._assigned_at: datetime | None = None
        self._cancelled_by: str | None = None
        self._fee_cents = 0
        self._attempt = 0  # driver searches so far; numbers each offer
        # drivers who declined, let an offer expire or backed out: not offered this ride again
        self._exclude: list[str] = []

    # --- api events -------------------------------------------------------------------

    @workflow.signal(name="ride_event")
    def ride_event(self, event: RideSignal) -> None:
        if event.event_id in self._seen:
            return  # a redelivered event has no second effect
        self._seen.add(event.event_id)
        if event.type == "ride.cancellation_requested":
            if self._cancel is None:
                self._cancel = event
        else:
            self._inbox.append(event)

    @workflow.query(name="status")
    def status(self) -> str:
        return self._status

    # --- the saga ---------------------------------------------------------------------

    @workflow.run
    async def run(self, ride: RideInput) -> RideOutcome:
        self._ride = ride
        saga = Saga(ride.ride_id)
        workflow.upsert_search_attributes(
            [RIDE_STATUS.value_set("requested"), RIDER_ID.value_set(ride.rider_id)]
        )
        try:
            quote = await self._step(
                A.quote_fare,
                QuoteRequest(
                    ride_id=ride.ride_id,
                    rider_id=ride.rider_id,
                    pickup=ride.pickup,
                    dropoff=ride.dropoff,
                    quote_id=ride.quote_id,
                ),
                FareQuote,
                summary="price the ride",
            )
            saga.add("settle hold", self._settle_hold)
            await self._step(
                A.authorize_payment,
                AuthorizeRequest(
                    ride_id=ride.ride_id, payment_method=ride.payment_method, quote=quote
                ),
                Authorization,
                summary=f"hold payment for a {quote.fare_cents / 100:.2f} fare",
            )
            saga.add("release driver", self._release_driver("ride_ended"))
            while True:
                self._set_status("matching")
                await self._match(quote)
                try:
                    trip = await self._trip()
                    break
                except _DriverBackedOut:
                    await self._release_driver("driver_cancelled")()
                    self._exclude.append(self._driver_id or "")
                    self._driver_id = None
                    self._assigned_at = None
            capture = await self._step(
                A.capture_payment,
                CaptureRequest(
                    ride_id=ride.ride_id,
                    quote=quote,
                    distance_m=trip["distance_m"],
                    duration_s=trip["duration_s"],
                ),
                Capture,
                summary="capture the final fare",
            )
            saga.discard("settle hold")  # captured: nothing left to void
            saga.discard("release driver")
            await self._release_driver("trip_completed")()
            await self._step(
                A.complete_ride,
                RideEnd(
                    ride_id=ride.ride_id,
                    final_fare_cents=capture.amount_cents,
                    currency=capture.currency,
                    distance_m=trip["distance_m"],
                    duration_s=trip["duration_s"],
                ),
                summary="record the completed ride",
            )
            self._set_status("completed")
            return self._outcome(final_fare_cents=capture.amount_cents)
        except _Cancelled as c:
            self._cancelled_by = c.by_role
            return await self._end_cancelled(saga, c)
        except (_NoDriver, ActivityError, asyncio.CancelledError) as e:
            reason, detail = self._failure_reason(e)
            return await self._end_failed(saga, reason, detail, cancelled=isinstance(
                e, asyncio.CancelledError))

    # --- matching ---------------------------------------------------------------------

    async def _match(self, quote: FareQuote) -> None:
        ride = self._ride
        deadline = workflow.now() + timedelta(seconds=ride.matching_deadline_s)
        while True:
            self._raise_if_cancelled()
            remaining = (deadline - workflow.now()).total_seconds()
            if remaining <= 0:
                raise _NoDriver()
            self._attempt += 1
            attempt = self._attempt
            offer = await self._step(
                A.reserve_driver,
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
                summary=f"find and reserve a driver (attempt {attempt})",
            )
            if offer is None:
                wait = min(NO_CANDIDATE_RETRY.total_seconds(), remaining)
                await self._wait_for(lambda e: False, timeout=wait)
                continue
            ref = OfferRef(ride_id=ride.ride_id, offer_id=offer.offer_id, driver_id=offer.driver_id)
            workflow.set_current_details(f"Offered to driver {offer.driver_id}, waiting")
            answer = await self._wait_for(
                lambda e, o=offer: e.type in ("ride.driver_accepted", "ride.driver_declined")
                and e.data.get("offer_id") == o.offer_id,
                timeout=ride.offer_timeout_s,
            )
            if answer is not None and answer.type == "ride.driver_accepted":
                self._driver_id = offer.driver_id
                self._assigned_at = workflow.now()
                await self._step(A.assign_driver, ref, summary=f"assign {offer.driver_id}")
                workflow.upsert_search_attributes([DRIVER_ID.value_set(offer.driver_id)])
                self._set_status("driver_assigned")
                return
            name = A.decline_offer if answer is not None else A.expire_offer
            await self._step(name, ref, summary=f"free {offer.driver_id} for other rides")
            self._exclude.append(offer.driver_id)

    # --- the trip ---------------------------------------------------------------------

    async def _trip(self) -> dict[str, int]:
        """Wait for the assigned driver's reports; returns the trip's distance and time."""
        driver = self._driver_id

        def reported(kind: str) -> Callable[[RideSignal], bool]:
            return lambda e: e.type == kind and e.data.get("driver_id") == driver

        workflow.set_current_details(f"Driver {driver} on the way to pickup")
        await self._wait_for(reported("ride.driver_arrived"), backout=True)
        self._set_status("driver_arrived")
        workflow.set_current_details(f"Driver {driver} at pickup")
        await self._wait_for(reported("ride.trip_started"), backout=True)
        self._set_status("in_progress")
        workflow.set_current_details(f"On the trip with driver {driver}")
        ended = await self._wait_for(reported("ride.trip_ended"))
        assert ended is not None
        return {"distance_m": int(ended.data["distance_m"]),
                "duration_s": int(ended.data["duration_s"])}

    # --- endings ----------------------------------------------------------------------

    async def _end_cancelled(self, saga: Saga, c: _Cancelled) -> RideOutcome:
        failures = await saga.compensate()
        if failures:
            return await self._end_failed(Saga(self._ride.ride_id), "compensation_failed",
                                          "; ".join(f"{f.name}: {f.error}" for f in failures))
        fee = self._fee_cents
        await self._step(
            A.cancel_ride,
            RideEnd(ride_id=self._ride.ride_id, by_role=c.by_role, reason=c.reason,
                    cancellation_fee_cents=fee or None),
            summary=f"record the cancellation by the {c.by_role}",
        )
        self._set_status("cancelled")
        return self._outcome(cancellation_fee_cents=fee or None)

    async def _end_failed(self, saga: Saga, reason: str, detail: str | None,
                          cancelled: bool = False) -> RideOutcome:
        async def finish() -> RideOutcome:
            nonlocal reason, detail
            failures = await saga.compensate()
            if failures:
                reason = "compensation_failed"
                detail = "; ".join(f"{f.name}: {f.error}" for f in failures)
                workflow.logger.error("ride %s ends failed: %s", self._ride.ride_id, detail)
            await self._step(
                A.fail_ride,
                RideEnd(ride_id=self._ride.ride_id, reason=reason, detail=detail),
                summary=f"record the failure: {reason}",
            )
            self._set_status("failed")
            return self._outcome(failure_reason=reason)

        if not cancelled:
            return await finish()
        # The workflow itself was cancelled (e.g. from the Temporal UI): finish the
        # compensations in a task the cancellation cannot reach, then report it.
        task = asyncio.ensure_future(finish())
        await asyncio.shield(task)
        return task.result()

    # --- compensations ----------------------------------------------------------------

    async def _settle_hold(self) -> None:
        """Release the hold, or charge the cancellation fee when the rider cancels after
        the free window (the fee rule lives with payments)."""
        ride = self._ride
        if self._cancelled_by == "rider" and self._assigned_at is not None:
            fee = await self._step(
                A.charge_cancellation_fee,
                FeeRequest(ride_id=ride.ride_id, assigned_at=self._assigned_at,
                           cancelled_at=workflow.now(), free_cancel_s=ride.free_cancel_s),
                Capture,
                compensation=True,
                summary="charge the cancellation fee, or release the hold",
            )
            self._fee_cents = fee.amount_cents
            return
        await self._step(A.void_payment, SettleRequest(ride_id=ride.ride_id),
                         compensation=True, summary="release the payment hold")

    def _release_driver(self, reason: str) -> Callable[[], Any]:
        async def release() -> None:
            step = f"{reason}:{len(self._seen)}:{workflow.now().timestamp()}"
            await self._step(A.release_driver,
                             ReleaseRequest(ride_id=self._ride.ride_id, reason=reason, step=step),
                             compensation=reason != "trip_completed",
                             summary="release the driver")

        return release

    # --- helpers ----------------------------------------------------------------------

    async def _step(
        self,
        name: str,
        arg: BaseModel,
        result_type: type[R] | None = None,
        *,
        summary: str,
        compensation: bool = False,
        optional: bool = False,
    ) -> Any:
        return await workflow.execute_activity(
            name,
            arg,
            result_type=result_type if not optional else result_type | None,  # type: ignore[operator]
            start_to_close_timeout=timedelta(seconds=15),
            retry_policy=COMPENSATION_RETRY if compensation else STEP_RETRY,
            summary=summary,
        )

    def _find(self, pred: Callable[[RideSignal], bool]) -> RideSignal | None:
        return next((e for e in self._inbox if pred(e)), None)

    async def _wait_for(
        self,
        pred: Callable[[RideSignal], bool],
        timeout: float | None = None,
        backout: bool = False,
    ) -> RideSignal | None:
        """The first waiting api event matching ``pred``; None on timeout. A cancellation
        request interrupts the wait (a driver's, before the trip starts, only sends the
        ride back to matching when ``backout`` is set)."""
        try:
            await workflow.wait_condition(
                lambda: self._cancel is not None or self._find(pred) is not None,
                timeout=timeout,
            )
        except TimeoutError:
            return None
        if self._cancel is not None:
            if backout and self._cancel.data.get("by_role") == "driver":
                self._cancel = None
                raise _DriverBackedOut()
            self._raise_if_cancelled()
        found = self._find(pred)
        if found is not None:
            self._inbox.remove(found)
        return found

    def _raise_if_cancelled(self) -> None:
        if self._cancel is not None:
            raise _Cancelled(self._cancel.data.get("by_role", "rider"),
                             self._cancel.data.get("reason"))

    def _set_status(self, status: str) -> None:
        self._status = status
        workflow.upsert_search_attributes([RIDE_STATUS.value_set(status)])

    def _outcome(self, **kw: Any) -> RideOutcome:
        return RideOutcome(ride_id=self._ride.ride_id, status=self._status,
                           driver_id=self._driver_id, **kw)

    @staticmethod
    def _failure_reason(e: BaseException) -> tuple[str, str | None]:
        if isinstance(e, _NoDriver):
            return "no_driver_available", None
        if isinstance(e, asyncio.CancelledError):
            return "workflow_cancelled", "the workflow was cancelled"
        cause = getattr(e, "cause", None)
        if isinstance(cause, ApplicationError) and cause.type == PAYMENT_DECLINED:
            return "payment_declined", cause.message
        return "step_failed", str(cause or e)
