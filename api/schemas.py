"""Request and response bodies of the HTTP API (CONTRACT.md section 2).

Request bodies are strict: JSON types must match (``"40.7"`` is not a latitude, ``true``
is not a distance), unknown fields are refused, and free text may not carry control
characters (PostgreSQL refuses NUL bytes, and nothing a person types needs the others).
Every constraint is in the JSON Schema too, so ``/openapi.json`` says what is accepted.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from domain.geo import Point
from domain.money import fmt
from domain.payments import PAYMENT_METHOD_MAX_LENGTH, PAYMENT_METHOD_PATTERN
from domain.pricing import MAX_TRIP_KM_LIMIT, longest_route_m
from domain.status import RideStatus
from store.tables import Driver, Offer, Ride

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# A ride, quote or other id as it appears in a path or a body.
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
# Printable text: no control characters (tab and newline included — these are one-line
# fields).
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"
MoneyStr = Annotated[str, Field(pattern=r"^-?[0-9]+\.[0-9]{2}$", examples=["12.40"],
                                description="An amount as a decimal string")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["USD"])]
# RideStatus's values, as the API takes and documents them (inline, as a list of strings).
# Built from the enum at run time, which a type checker cannot follow: to it, a string.
if TYPE_CHECKING:
    RideStatusName = str
else:
    RideStatusName = Literal[tuple(s.value for s in RideStatus)]
DriverStatus = Literal["offline", "available", "reserved", "on_trip"]


def _whole(value: Any) -> Any:
    # JSON Schema counts 1080.0 as an integer; a strict int would not. Accept whole
    # floats as the numbers they are, and leave everything else to strict validation.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# An integer in the JSON Schema sense: 2300 or 2300.0, never "2300" or true.
WholeNumber = Annotated[int, BeforeValidator(_whole)]


def text(max_length: int, **kw: Any) -> Any:
    """A one-line free-text field of at most ``max_length`` characters."""
    return Field(max_length=max_length, pattern=TEXT_PATTERN, **kw)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Coordinates(Body):
    """A point in degrees; integers are fine (``{"lat": 40, "lng": -74}``)."""

    lat: float = Field(ge=-90, le=90, allow_inf_nan=False, description="Latitude in degrees",
                       examples=[40.75])
    lng: float = Field(ge=-180, le=180, allow_inf_nan=False,
                       description="Longitude in degrees", examples=[-73.99])

    @property
    def point(self) -> Point:
        return Point(lat=self.lat, lng=self.lng)


class QuoteIn(Body):
    pickup: Coordinates
    dropoff: Coordinates


class QuoteOut(BaseModel):
    quote_id: str
    fare: MoneyStr
    currency: Currency
    surge_multiplier: float
    distance_m: int
    duration_s: int
    expires_at: datetime


class RideIn(Body):
    pickup: Coordinates
    dropoff: Coordinates
    quote_id: Id | None = Field(
        default=None, description="From `POST /v1/quotes`, to keep its price while it lasts")
    payment_method: str = Field(
        default="card", min_length=1, max_length=PAYMENT_METHOD_MAX_LENGTH,
        pattern=PAYMENT_METHOD_PATTERN, examples=["card", "pm_4f2a9c"],
        description='A payment gateway token: "card", a test card ("card_<name>") or a '
        'saved method ("pm_" and letters and digits); the sandbox declines '
        '"card_declined" and fails "card_flaky" twice before it succeeds',
    )


class CancelIn(Body):
    reason: str | None = text(500, default=None, description="Shown to the other party")


class TripReport(Body):
    # The schema's cap is the longest RIDEHAIL_MAX_TRIP_KM allows (1000 km); the route
    # refuses a distance longer than the configured longest trip may be driven.
    distance_m: WholeNumber = Field(
        ge=0, le=longest_route_m(MAX_TRIP_KM_LIMIT),
        description="Distance driven, in metres; at most twice RIDEHAIL_MAX_TRIP_KM")
    duration_s: WholeNumber = Field(ge=0, le=86_400, description="Trip duration, in seconds")


class TripFiguresOut(BaseModel):
    distance_m: int
    duration_s: int


class FareAdjustedOut(BaseModel):
    """Why the final fare is not computed from the driver's reported trip."""

    reason: str = Field(examples=["reported distance 9000 m disagrees with the route "
                                  "estimate (2431 m)"])
    reported: TripFiguresOut | None = Field(
        description="What the driver reported (null for a trip cancelled in progress)")
    used: TripFiguresOut = Field(description="What the fare was computed from")


class FareOut(BaseModel):
    currency: Currency
    quoted: MoneyStr | None
    surge_multiplier: float | None
    final: MoneyStr | None
    cancellation_fee: MoneyStr | None
    adjusted: FareAdjustedOut | None = Field(
        default=None, description="Set when the final fare was not computed from the "
                                  "driver's reported distance and duration (CONTRACT.md §5)")


class PaymentOut(BaseModel):
    status: Literal["none", "authorized", "captured", "voided", "declined", "refunded"]
    authorized: MoneyStr
    captured: MoneyStr


class RideOut(BaseModel):
    ride_id: str
    rider_id: str
    driver_id: str | None
    status: RideStatusName
    failure_reason: str | None
    pickup: Point
    dropoff: Point
    fare: FareOut
    payment: PaymentOut
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, r: Ride) -> RideOut:
        return cls(
            ride_id=r.ride_id,
            rider_id=r.rider_id,
            driver_id=r.driver_id,
            status=r.status,
            failure_reason=r.failure_reason,
            pickup=Point(lat=r.pickup_lat, lng=r.pickup_lng),
            dropoff=Point(lat=r.dropoff_lat, lng=r.dropoff_lng),
            fare=FareOut(currency=r.currency, quoted=fmt(r.quoted_cents),
                         surge_multiplier=r.surge_multiplier, final=fmt(r.final_cents),
                         cancellation_fee=fmt(r.cancellation_fee_cents),
                         adjusted=FareAdjustedOut.model_validate_json(r.fare_adjusted)
                         if r.fare_adjusted else None),
            payment=PaymentOut(status=r.payment_status,
                               authorized=fmt(r.authorized_cents) or "0.00",
                               captured=fmt(r.captured_cents) or "0.00"),
            created_at=r.created_at,
            updated_at=r.updated_at,
        )


class RidePage(BaseModel):
    rides: list[RideOut]
    next_cursor: str | None = Field(
        description="Pass as `?cursor=` for the next page; null on the last page")


class CloudEventOut(BaseModel):
    """A CloudEvents 1.0 event in structured JSON (CONTRACT.md section 3)."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"]
    id: str
    source: str
    type: str = Field(examples=["ride.driver_assigned"])
    subject: str = Field(description="The ride's id")
    time: datetime
    datacontenttype: Literal["application/json"]
    dataversion: int = Field(description="The payload's schema version")
    dataschema: str | None = Field(
        default=None, description="The `$id` of the payload's JSON Schema (events/schemas/); "
                                  "absent from events written before 0.3")
    data: dict[str, Any]


class RideEvents(BaseModel):
    events: list[CloudEventOut]


class Accepted(BaseModel):
    ride_id: str
    event_id: str = Field(description="The id of the event this request published")


class Vehicle(Body):
    make: str = text(100, min_length=1, examples=["Kia"])
    model: str = text(100, min_length=1, examples=["Niro"])
    plate: str = text(32, min_length=1, examples=["RH-001"])


class DriverProfileIn(Body):
    name: str = text(200, min_length=1, examples=["Bob"])
    vehicle: Vehicle


class VehicleOut(BaseModel):
    make: str
    model: str
    plate: str


class DriverOut(BaseModel):
    driver_id: str
    name: str
    vehicle: VehicleOut | None
    status: DriverStatus
    ride_id: str | None
    location: Point | None

    @classmethod
    def of(cls, d: Driver) -> DriverOut:
        vehicle = (VehicleOut(make=d.vehicle_make, model=d.vehicle_model, plate=d.vehicle_plate)
                   if d.vehicle_make else None)
        location = Point(lat=d.lat, lng=d.lng) if d.lat is not None and d.lng is not None \
            else None
        return cls(driver_id=d.driver_id, name=d.name, vehicle=vehicle,
                   status=d.status, ride_id=d.ride_id, location=location)


class OfferOut(BaseModel):
    ride_id: str
    offer_id: str = Field(description="Identifies this offer among the ride's offers")
    pickup: Point
    dropoff: Point
    fare: MoneyStr
    currency: Currency
    expires_at: datetime = Field(description="Accept or decline before this")

    @classmethod
    def of(cls, o: Offer) -> OfferOut:
        return cls(ride_id=o.ride_id, offer_id=o.offer_id,
                   pickup=Point(lat=o.pickup_lat, lng=o.pickup_lng),
                   dropoff=Point(lat=o.dropoff_lat, lng=o.dropoff_lng),
                   fare=fmt(o.fare_cents) or "0.00", currency=o.currency,
                   expires_at=o.expires_at)


class DeadLetterOut(BaseModel):
    id: int = Field(description="The dead letter's sequence on the DLQ stream; redrive by it")
    consumer: str = Field(description="The consumer that gave up on the event")
    original_subject: str
    original_stream: str
    original_seq: int
    deliveries: int
    error: str = Field(description="The last error")
    time: datetime | None
    event_id: str | None = Field(description="Null when the message is not a valid event")
    event_type: str | None
    event: dict[str, Any] | None = Field(description="The event, when the body is JSON")


class DeadLetters(BaseModel):
    dead_letters: list[DeadLetterOut]


class Redriven(BaseModel):
    id: int
    original_subject: str
    event_id: str | None
