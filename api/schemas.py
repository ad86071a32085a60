"""Request and response bodies of the HTTP API (CONTRACT.md section 2)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ridehail.geo import Point
from ridehail.money import fmt
from ridehail.tables import Driver, Offer, Ride

Id = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
MoneyStr = str  # decimal string, e.g. "12.40"
RideStatus = Literal["requested", "matching", "driver_assigned", "driver_arrived",
                     "in_progress", "completed", "cancelled", "failed"]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuoteIn(Body):
    pickup: Point
    dropoff: Point


class QuoteOut(BaseModel):
    quote_id: str
    fare: MoneyStr
    currency: str
    surge_multiplier: float
    distance_m: int
    duration_s: int
    expires_at: datetime


class RideIn(Body):
    pickup: Point
    dropoff: Point
    quote_id: str | None = Field(default=None, min_length=1, max_length=64)
    payment_method: str = Field(
        default="card", min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]*$",
        description='A card token; the sandbox declines "card_declined" and fails '
        '"card_flaky" twice before it succeeds',
    )


class CancelIn(Body):
    reason: str | None = Field(default=None, max_length=500)


class TripReport(Body):
    distance_m: int = Field(ge=0, le=2_000_000)
    duration_s: int = Field(ge=0, le=86_400)


class FareOut(BaseModel):
    currency: str
    quoted: MoneyStr | None
    surge_multiplier: float | None
    final: MoneyStr | None
    cancellation_fee: MoneyStr | None


class PaymentOut(BaseModel):
    status: Literal["none", "authorized", "captured", "voided", "declined", "refunded"]
    authorized: MoneyStr
    captured: MoneyStr


class RideOut(BaseModel):
    ride_id: str
    rider_id: str
    driver_id: str | None
    status: RideStatus
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
            status=r.status,  # type: ignore[arg-type]
            failure_reason=r.failure_reason,
            pickup=Point(lat=r.pickup_lat, lng=r.pickup_lng),
            dropoff=Point(lat=r.dropoff_lat, lng=r.dropoff_lng),
            fare=FareOut(currency=r.currency, quoted=fmt(r.quoted_cents),
                         surge_multiplier=r.surge_multiplier, final=fmt(r.final_cents),
                         cancellation_fee=fmt(r.cancellation_fee_cents)),
            payment=PaymentOut(status=r.payment_status,  # type: ignore[arg-type]
                               authorized=fmt(r.authorized_cents) or "0.00",
                               captured=fmt(r.captured_cents) or "0.00"),
            created_at=r.created_at,
            updated_at=r.updated_at,
        )


class RidePage(BaseModel):
    rides: list[RideOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page")


class CloudEventOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    specversion: str
    id: str
    source: str
    type: str
    subject: str
    time: datetime
    datacontenttype: str
    dataversion: int
    data: dict


class RideEvents(BaseModel):
    events: list[CloudEventOut]


class Accepted(BaseModel):
    ride_id: str
    event_id: str = Field(description="The id of the event this request published")


class Vehicle(Body):
    make: str = Field(min_length=1, max_length=100)
    model: str = Field(min_length=1, max_length=100)
    plate: str = Field(min_length=1, max_length=32)


class DriverProfileIn(Body):
    name: str = Field(min_length=1, max_length=200)
    vehicle: Vehicle


class LocationIn(Point):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DriverOut(BaseModel):
    driver_id: str
    name: str
    vehicle: Vehicle | None
    status: Literal["offline", "available", "reserved", "on_trip"]
    ride_id: str | None
    location: Point | None

    @classmethod
    def of(cls, d: Driver) -> DriverOut:
        vehicle = (Vehicle(make=d.vehicle_make, model=d.vehicle_model, plate=d.vehicle_plate)
                   if d.vehicle_make else None)
        location = Point(lat=d.lat, lng=d.lng) if d.lat is not None and d.lng is not None \
            else None
        return cls(driver_id=d.driver_id, name=d.name, vehicle=vehicle,
                   status=d.status, ride_id=d.ride_id, location=location)  # type: ignore[arg-type]


class OfferOut(BaseModel):
    ride_id: str
    offer_id: str
    pickup: Point
    dropoff: Point
    fare: MoneyStr
    currency: str
    expires_at: datetime

    @classmethod
    def of(cls, o: Offer) -> OfferOut:
        return cls(ride_id=o.ride_id, offer_id=o.offer_id,
                   pickup=Point(lat=o.pickup_lat, lng=o.pickup_lng),
                   dropoff=Point(lat=o.dropoff_lat, lng=o.dropoff_lng),
                   fare=fmt(o.fare_cents) or "0.00", currency=o.currency,
                   expires_at=o.expires_at)
