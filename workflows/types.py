"""What crosses the Temporal boundary: the workflow's input and signal, and each
activity's input and result. One pydantic model per call so fields can be added
compatibly. The names (workflow, signal, steps) are in ``workflows.contract``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from domain.status import RideStatus


class Point(BaseModel):
    """A point on the map as it crosses the Temporal boundary.

    The workflow sandbox may import only the standard library, temporalio and pydantic,
    so this is a twin of ``domain.geo.Point`` (which brings h3 along) rather than an
    import of it. ``from_attributes`` lets a ``domain.geo.Point`` be passed where this one
    is expected (the trigger builds ``RideInput`` from the event's points).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", from_attributes=True)

    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lng: float = Field(ge=-180, le=180, allow_inf_nan=False)


class RideInput(BaseModel):
    ride_id: str
    rider_id: str
    pickup: Point
    dropoff: Point
    quote_id: str | None = None
    payment_method: str = "card"
    # When the api committed the request (``ride.requested``'s ``time``); None for rides
    # started before the trigger said it.
    requested_at: datetime | None = None
    offer_timeout_s: float = 15
    matching_deadline_s: float = 120
    free_cancel_s: float = 120


class RideSignal(BaseModel):
    """An api event for this ride, forwarded by the workflow-trigger consumer."""

    event_id: str
    type: str
    data: dict[str, Any]
    # When the api committed the event (the CloudEvent's ``time``); None from triggers
    # that predate it. The rules that depend on when something happened read this.
    time: datetime | None = None


class RideOutcome(BaseModel):
    ride_id: str
    status: RideStatus
    failure_reason: str | None = None
    driver_id: str | None = None
    final_fare_cents: int | None = None
    cancellation_fee_cents: int | None = None


class QuoteRequest(BaseModel):
    ride_id: str
    rider_id: str
    pickup: Point
    dropoff: Point
    quote_id: str | None = None
    # When the ride was requested: its quote must have been live then. None from
    # workflows that predate it (the activity then asks the read model).
    requested_at: datetime | None = None


class FareQuote(BaseModel):
    fare_cents: int
    currency: str
    surge_multiplier: float
    distance_m: int
    duration_s: int
    quote_id: str | None = None


class AuthorizeRequest(BaseModel):
    ride_id: str
    payment_method: str
    quote: FareQuote


class Authorization(BaseModel):
    amount_cents: int
    currency: str


class SettleRequest(BaseModel):
    """Void the ride's hold, or refund what was captured from it."""

    ride_id: str
    reason: str = ""


class CaptureRequest(BaseModel):
    ride_id: str
    quote: FareQuote
    distance_m: int  # as the driver reported them
    duration_s: int
    # Settle against the trip meter (the driver's figures only where they agree with it);
    # without, the driver's figures are charged as reported (rides started before).
    metered: bool = False
    started_at: datetime | None = None  # the trip_started event's time
    ended_at: datetime | None = None  # trip_ended's (or the cancel's, for a cut-short trip)
    cut_short: bool = False  # cancelled during the trip: no report, charge the meter so far


class TripFigures(BaseModel):
    distance_m: int
    duration_s: int


class FareAdjustment(BaseModel):
    """The driver's figures were not charged: why, what they were, and what was."""

    reason: str
    reported: TripFigures | None
    used: TripFigures


class Capture(BaseModel):
    amount_cents: int
    currency: str
    # the trip as charged (metered settlements only)
    used: TripFigures | None = None
    adjusted: FareAdjustment | None = None


class FeeRequest(BaseModel):
    ride_id: str
    assigned_at: datetime
    cancelled_at: datetime
    free_cancel_s: float


class ReserveRequest(BaseModel):
    ride_id: str
    rider_id: str
    pickup: Point
    dropoff: Point
    fare_cents: int
    currency: str
    attempt: int
    exclude: list[str] = []
    offer_timeout_s: float


class OfferMade(BaseModel):
    offer_id: str
    driver_id: str
    expires_at: datetime


class OfferRef(BaseModel):
    ride_id: str
    offer_id: str
    driver_id: str
    # On expiry, keep an offer the driver answered in time (the api records the answer
    # with the event) instead of expiring it: the answer is on its way to the workflow.
    honour_answer: bool = False


class OfferClosed(BaseModel):
    """How an offer ended: ``expired``, or the answer the driver gave in time
    (``accepted`` / ``declined``)."""

    outcome: str


class ReleaseRequest(BaseModel):
    ride_id: str
    # why the driver is freed: trip_completed, driver_cancelled, rider_cancelled,
    # admin_cancelled or ride_failed (the notifier tells the driver about the last three)
    reason: str
    step: str  # makes the release's event id unique within the ride


class RideEnd(BaseModel):
    ride_id: str
    reason: str | None = None
    detail: str | None = None
    by_role: str | None = None
    final_fare_cents: int | None = None
    cancellation_fee_cents: int | None = None
    distance_m: int | None = None
    duration_s: int | None = None
    currency: str = "USD"
    fare_adjusted: FareAdjustment | None = None
