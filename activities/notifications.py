"""Notifications: who is told what when a ride changes.

``notifications_for`` is the rule; the ``notifier`` consumer (events/notifier.py) applies
it to every ride event, stores each notification and publishes ``notification.sent``.
"""

from __future__ import annotations

from dataclasses import dataclass

from events import catalog as c
from events.envelope import CloudEvent


@dataclass(frozen=True)
class Notice:
    user_id: str
    kind: str
    message: str


def notifications_for(event: CloudEvent, rider_id: str) -> list[Notice]:
    """The notices an event causes. The rider hears of assignment, arrival and the
    ride's end; the driver hears of offers and of a cancellation of their ride."""
    p = event.payload()
    ride = event.subject
    match event.type, p:
        case "ride.driver_assigned", c.DriverAssigned():
            return [Notice(rider_id, "driver_assigned",
                           f"Driver {p.driver_id} is on the way for ride {ride}.")]
        case "ride.driver_arrived", c.DriverReported():
            return [Notice(rider_id, "driver_arrived", "Your driver has arrived at pickup.")]
        case "ride.completed", c.RideCompleted():
            return [Notice(rider_id, "ride_completed",
                           f"Ride complete. Fare: {p.final_fare} {p.currency}.")]
        case "ride.cancelled", c.RideCancelled():
            fee = f" A cancellation fee of {p.cancellation_fee} {p.currency} applies." \
                if p.cancellation_fee else ""
            return [Notice(rider_id, "ride_cancelled", f"Your ride was cancelled.{fee}")]
        case "ride.failed", c.RideFailed():
            return [Notice(rider_id, "ride_failed",
                           f"We could not complete your ride: {p.reason}.")]
        case "ride.driver_offered", c.DriverOffered():
            return [Notice(p.driver_id, "ride_offered",
                           f"New ride offer {ride}: {p.fare} {p.currency}, "
                           f"answer by {p.expires_at}.")]
        case "ride.driver_released", c.DriverReleased() if p.reason in (
            "rider_cancelled", "ride_ended"
        ):
            return [Notice(p.driver_id, "ride_cancelled", f"Ride {ride} was cancelled.")]
    return []
