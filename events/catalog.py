"""The event catalog: one payload model per CloudEvent type and version (CONTRACT.md §3).

Every event a ridehail component publishes or consumes is listed in ``CATALOG``. A type's
current version is the one producers write; older versions stay listed so consumers can
read them, and ``events.envelope`` upcasts an old payload to the current model.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from domain.geo import Point


class Payload(BaseModel):
    # Unknown fields are ignored, so a producer may add an optional field without a new
    # version and consumers still running the older model keep working.
    model_config = ConfigDict(extra="ignore")


class RidePayload(Payload):
    ride_id: str


class DriverPayload(Payload):
    driver_id: str


# --- from the api: start and steer the saga ---------------------------------------------


class RideRequested(RidePayload):
    rider_id: str
    pickup: Point
    dropoff: Point
    quote_id: str | None = None
    payment_method: str = "card"


class CancellationRequested(RidePayload):
    by_role: Literal["rider", "driver", "admin"]
    by_id: str
    reason: str | None = None


class DriverAnswered(RidePayload):
    """The offered driver accepted or declined (``ride.driver_accepted``/``_declined``)."""

    driver_id: str
    offer_id: str


class DriverReported(RidePayload):
    """The assigned driver arrived at pickup or started the trip."""

    driver_id: str


class TripEnded(RidePayload):
    driver_id: str
    distance_m: int = Field(ge=0)
    duration_s: int = Field(ge=0)


# --- from the worker: what the saga did -------------------------------------------------


class PaymentAuthorized(RidePayload):
    amount: Decimal
    currency: str
    quoted_fare: Decimal
    surge_multiplier: float


class PaymentDeclined(RidePayload):
    amount: Decimal
    currency: str
    reason: str


class DriverOffered(RidePayload):
    driver_id: str
    offer_id: str
    fare: Decimal
    currency: str
    expires_at: str


class OfferExpired(RidePayload):
    driver_id: str
    offer_id: str


class DriverAssigned(RidePayload):
    driver_id: str


class DriverReleased(RidePayload):
    driver_id: str
    reason: str


class PaymentMoved(RidePayload):
    """A capture, void or refund on the ride's hold."""

    amount: Decimal
    currency: str
    purpose: str = "fare"


class TripFigures(Payload):
    distance_m: int
    duration_s: int


class FareAdjusted(Payload):
    """The fare was not computed from the driver's reported trip: why, what they
    reported (none for a trip cut short), and what was charged for."""

    reason: str
    reported: TripFigures | None = None
    used: TripFigures


class RideCompleted(RidePayload):
    final_fare: Decimal
    currency: str
    distance_m: int  # the trip as charged
    duration_s: int
    fare_adjusted: FareAdjusted | None = None


class RideCancelled(RidePayload):
    by_role: str
    reason: str | None = None
    cancellation_fee: Decimal | None = None
    currency: str = "USD"
    # a trip in progress cancelled: the metered trip so far, charged
    final_fare: Decimal | None = None
    fare_adjusted: FareAdjusted | None = None


class RideFailed(RidePayload):
    reason: str
    detail: str | None = None


# --- from the driver app ----------------------------------------------------------------


class DriverWentOnline(DriverPayload):
    location: Point


class DriverWentOffline(DriverPayload):
    pass


class DriverLocationUpdatedV1(DriverPayload):
    """Version 1 sent flat coordinates; version 2 nests them as a Point and adds the
    fix's accuracy. Kept so old messages on DRIVERS can still be read and upcast."""

    lat: float
    lng: float


class DriverLocationUpdated(DriverPayload):
    location: Point
    accuracy_m: float | None = None


# --- notifications ----------------------------------------------------------------------


class NotificationSent(Payload):
    notification_id: str
    user_id: str
    ride_id: str | None = None
    kind: str
    message: str


# type -> {version: model}; the highest version is the one producers write.
CATALOG: dict[str, dict[int, type[Payload]]] = {
    "ride.requested": {1: RideRequested},
    "ride.cancellation_requested": {1: CancellationRequested},
    "ride.driver_accepted": {1: DriverAnswered},
    "ride.driver_declined": {1: DriverAnswered},
    "ride.driver_arrived": {1: DriverReported},
    "ride.trip_started": {1: DriverReported},
    "ride.trip_ended": {1: TripEnded},
    "ride.payment_authorized": {1: PaymentAuthorized},
    "ride.payment_declined": {1: PaymentDeclined},
    "ride.driver_offered": {1: DriverOffered},
    "ride.offer_expired": {1: OfferExpired},
    "ride.driver_assigned": {1: DriverAssigned},
    "ride.driver_released": {1: DriverReleased},
    "ride.payment_captured": {1: PaymentMoved},
    "ride.payment_voided": {1: PaymentMoved},
    "ride.payment_refunded": {1: PaymentMoved},
    "ride.completed": {1: RideCompleted},
    "ride.cancelled": {1: RideCancelled},
    "ride.failed": {1: RideFailed},
    "driver.online": {1: DriverWentOnline},
    "driver.offline": {1: DriverWentOffline},
    "driver.location_updated": {1: DriverLocationUpdatedV1, 2: DriverLocationUpdated},
    "notification.sent": {1: NotificationSent},
}

# Events from the api that start or steer a ride's workflow.
RIDE_COMMANDS = frozenset(
    {
        "ride.requested",
        "ride.cancellation_requested",
        "ride.driver_accepted",
        "ride.driver_declined",
        "ride.driver_arrived",
        "ride.trip_started",
        "ride.trip_ended",
    }
)


def current_version(event_type: str) -> int:
    return max(CATALOG[event_type])


def schema_id(event_type: str, version: int) -> str:
    """The ``$id`` of a payload schema (events/schemas/), a CloudEvent's ``dataschema``."""
    return f"https://ridehail.dev/events/{event_type}/v{version}.json"


# (type, version) -> the function turning that version's data into the next version's.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("driver.location_updated", 1): lambda d: {
        "driver_id": d["driver_id"],
        "location": {"lat": d["lat"], "lng": d["lng"]},
        "accuracy_m": None,
    },
}
