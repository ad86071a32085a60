"""Notifications: who is told what when a ride changes.

``notifications_for`` is the rule; the ``notifier`` consumer (events/consumers/notifier.py) applies
it to every ride event, stores each notification and publishes ``notification.sent``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class RideFact(Protocol):
    """What the rule reads of a ride event: its type, its ride (the subject) and its
    payload (an ``events.catalog`` model; the rule reads it by attribute, so this module
    needs no import of the event backbone)."""

    @property
    def type(self) -> str: ...

    @property
    def subject(self) -> str: ...

    def payload(self) -> Any: ...


@dataclass(frozen=True)
class Notice:
    user_id: str
    kind: str
    message: str


# The ride event types that can tell anyone anything (``notifications_for`` answers no
# notice for any other): the notifier reads only these.
NOTIFYING_TYPES = frozenset({
    "ride.driver_assigned", "ride.driver_arrived", "ride.completed", "ride.cancelled",
    "ride.failed", "ride.driver_offered", "ride.driver_released",
})

# Why a driver was released, for the releases the driver must hear about: they lost a
# ride they had been offered or were driving to, and did not cause it themselves.
TELL_DRIVER_RELEASED = {
    "rider_cancelled": "The rider cancelled ride {ride}.",
    "admin_cancelled": "Ride {ride} was cancelled by support.",
    "ride_failed": "Ride {ride} was called off.",
}


def notifications_for(event: RideFact, rider_id: str) -> list[Notice]:
    """The notices an event causes. The rider hears of assignment, arrival and the
    ride's end (and of a driver backing out); the driver hears of offers and of losing
    a ride to a cancellation."""
    p = event.payload()
    ride = event.subject
    match event.type:
        case "ride.driver_assigned":
            return [
                Notice(
                    rider_id,
                    "driver_assigned",
                    f"Driver {p.driver_id} is on the way for ride {ride}.",
                )
            ]
        case "ride.driver_arrived":
            return [Notice(rider_id, "driver_arrived", "Your driver has arrived at pickup.")]
        case "ride.completed":
            return [
                Notice(
                    rider_id, "ride_completed", f"Ride complete. Fare: {p.final_fare} {p.currency}."
                )
            ]
        case "ride.cancelled":
            fee = (
                f" A cancellation fee of {p.cancellation_fee} {p.currency} applies."
                if p.cancellation_fee
                else ""
            )
            return [Notice(rider_id, "ride_cancelled", f"Your ride was cancelled.{fee}")]
        case "ride.failed":
            return [
                Notice(rider_id, "ride_failed", f"We could not complete your ride: {p.reason}.")
            ]
        case "ride.driver_offered":
            return [
                Notice(
                    p.driver_id,
                    "ride_offered",
                    f"New ride offer {ride}: {p.fare} {p.currency}, answer by {p.expires_at}.",
                )
            ]
        case "ride.driver_released" if p.reason == "driver_cancelled":
            return [
                Notice(
                    rider_id,
                    "driver_cancelled",
                    "Your driver cancelled; we are finding you another one.",
                )
            ]
        case "ride.driver_released" if p.reason in TELL_DRIVER_RELEASED:
            return [
                Notice(
                    p.driver_id, "ride_cancelled", TELL_DRIVER_RELEASED[p.reason].format(ride=ride)
                )
            ]
    return []
