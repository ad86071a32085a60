"""A ride's request and its row in the ``rides`` read model: the one mapping between
them.

A ride's row is born from its request in two places — the API writes it with the
``ride.requested`` event, and the projection writes it from that event where the API did
not (a rebuild, another publisher) — and both build it here, so the two cannot drift.
The workflow-trigger reads a request back from a row only when an event of the ride
reaches it before its request did (``request_of``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from domain.geo import Point, zone_cell
from domain.status import RideStatus
from store.tables import Ride


class Request(Protocol):
    """What a rider asked for, as ``ride.requested`` says it: the event's payload is one,
    and so is a ``RideRequest`` read back from a row."""

    @property
    def ride_id(self) -> str: ...

    @property
    def rider_id(self) -> str: ...

    @property
    def pickup(self) -> Point: ...

    @property
    def dropoff(self) -> Point: ...

    @property
    def quote_id(self) -> str | None: ...

    @property
    def payment_method(self) -> str: ...


@dataclass(frozen=True)
class RideRequest:
    """A ride's request as its row keeps it, with when it was made (the row's
    ``created_at``, which is the ``ride.requested`` event's ``time``)."""

    ride_id: str
    rider_id: str
    pickup: Point
    dropoff: Point
    quote_id: str | None
    payment_method: str
    requested_at: datetime


def requested_ride(request: Request, at: datetime) -> Ride:
    """The row of a ride just requested ``at``: status ``requested``, in the surge zone of
    its pickup, created and last updated then."""
    return Ride(
        ride_id=request.ride_id, rider_id=request.rider_id, status=RideStatus.REQUESTED,
        pickup_lat=request.pickup.lat, pickup_lng=request.pickup.lng,
        dropoff_lat=request.dropoff.lat, dropoff_lng=request.dropoff.lng,
        pickup_zone=zone_cell(request.pickup), payment_method=request.payment_method,
        quote_id=request.quote_id, created_at=at, updated_at=at,
    )


def request_of(ride: Ride) -> RideRequest:
    """The request ``ride`` was made with, as ``requested_ride`` stored it."""
    return RideRequest(
        ride_id=ride.ride_id, rider_id=ride.rider_id,
        pickup=Point(lat=ride.pickup_lat, lng=ride.pickup_lng),
        dropoff=Point(lat=ride.dropoff_lat, lng=ride.dropoff_lng),
        quote_id=ride.quote_id, payment_method=ride.payment_method,
        requested_at=ride.created_at,
    )
