"""The saga's endings: record a ride as completed, cancelled or failed."""

from __future__ import annotations

from temporalio import activity

from activities.facts import fact
from domain.money import to_decimal
from events.catalog import FareAdjusted, Payload, RideCancelled, RideCompleted, RideFailed
from events.outbox import Outbox
from workflows.contract import Step
from workflows.types import RideEnd


class LifecycleActivities:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def _publish(self, event_type: str, end: RideEnd, data: Payload) -> None:
        # one ending per ride: the step is "end" whichever it is
        event = fact(event_type, end.ride_id, "end", data)
        await self.outbox.write(lambda session: (None, [event]))

    @activity.defn(name=Step.COMPLETE_RIDE)
    async def complete_ride(self, end: RideEnd) -> None:
        await self._publish(
            "ride.completed",
            end,
            RideCompleted(
                ride_id=end.ride_id,
                final_fare=to_decimal(end.final_fare_cents or 0),
                currency=end.currency,
                distance_m=end.distance_m or 0,
                duration_s=end.duration_s or 0,
                fare_adjusted=_adjusted(end),
            ),
        )

    @activity.defn(name=Step.CANCEL_RIDE)
    async def cancel_ride(self, end: RideEnd) -> None:
        fee = end.cancellation_fee_cents
        await self._publish(
            "ride.cancelled",
            end,
            RideCancelled(
                ride_id=end.ride_id,
                by_role=end.by_role or "rider",
                reason=end.reason,
                cancellation_fee=to_decimal(fee) if fee else None,
                currency=end.currency,
                final_fare=to_decimal(end.final_fare_cents)
                if end.final_fare_cents is not None else None,
                fare_adjusted=_adjusted(end),
            ),
        )

    @activity.defn(name=Step.FAIL_RIDE)
    async def fail_ride(self, end: RideEnd) -> None:
        await self._publish(
            "ride.failed",
            end,
            RideFailed(ride_id=end.ride_id, reason=end.reason or "unknown", detail=end.detail),
        )


def _adjusted(end: RideEnd) -> FareAdjusted | None:
    if end.fare_adjusted is None:
        return None
    return FareAdjusted.model_validate(end.fare_adjusted.model_dump())
