"""Quotes and zone surge, read from and written to the tables: shared by the API
(``POST /v1/quotes``, a ride requested with a quote) and the pricing activity."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import h3
from sqlalchemy import bindparam
from sqlmodel import Session, col, func, select

from domain.geo import DRIVER_CELL_RES, Point, haversine_m, zone_cell
from domain.money import CURRENCY
from domain.pricing import (
    QUOTE_MATCH_M,
    QUOTE_TTL,
    estimate_trip,
    fare_cents,
    surge_multiplier,
)
from domain.status import OPEN
from store.tables import Driver, Quote, Ride, utcnow


@dataclass(frozen=True)
class Price:
    """A trip priced now: the fare at the zone's surge, and the estimate it rests on."""

    fare_cents: int
    currency: str
    surge_multiplier: float
    distance_m: int
    duration_s: int


# Built once (zone_surge prices every ride and quote): the cells and zones are bound.
_AVAILABLE_COUNT_IN_CELLS = (
    select(func.count())
    .select_from(Driver)
    .where(Driver.status == "available")
    .where(col(Driver.h3_cell).in_(bindparam("cells", expanding=True)))
)
_RIDERS_WAITING_IN_ZONES = (
    select(func.count(func.distinct(Ride.rider_id)))
    .select_from(Ride)
    .where(col(Ride.status).in_(OPEN))
    .where(col(Ride.pickup_zone).in_(bindparam("zones", expanding=True)))
    .where(col(Ride.ride_id) != bindparam("exclude_ride"))
)


def zone_surge(session: Session, pickup: Point, exclude_ride: str | None = None) -> float:
    """Surge for the pickup's zone: distinct riders with an open request in the zone and
    its neighbours against available drivers there (one rider's many requests count
    once). ``exclude_ride`` leaves out the ride being priced, so a ride is priced as its
    quote was (before it existed)."""
    zones = h3.grid_disk(zone_cell(pickup), 1)
    driver_cells = [c for z in zones for c in h3.cell_to_children(z, DRIVER_CELL_RES)]
    drivers = session.exec(_AVAILABLE_COUNT_IN_CELLS, params={"cells": driver_cells}).one()
    # no ride has the empty id: excluding none
    requests = session.exec(_RIDERS_WAITING_IN_ZONES,
                            params={"zones": zones, "exclude_ride": exclude_ride or ""}).one()
    return surge_multiplier(int(requests), int(drivers))


def price(
    session: Session, pickup: Point, dropoff: Point, exclude_ride: str | None = None
) -> Price:
    trip = estimate_trip(pickup, dropoff)
    surge = zone_surge(session, pickup, exclude_ride)
    return Price(
        fare_cents=fare_cents(trip.distance_m, trip.duration_s, surge),
        currency=CURRENCY,
        surge_multiplier=surge,
        distance_m=trip.distance_m,
        duration_s=trip.duration_s,
    )


def make_quote(session: Session, rider_id: str, pickup: Point, dropoff: Point,
               quote_id: str) -> Quote:
    """A priced quote under the id the caller chose (the API's request), stored so a
    ride requested with that id keeps the price."""
    q = price(session, pickup, dropoff)
    quote = Quote(
        quote_id=quote_id,
        rider_id=rider_id,
        pickup_lat=pickup.lat,
        pickup_lng=pickup.lng,
        dropoff_lat=dropoff.lat,
        dropoff_lng=dropoff.lng,
        fare_cents=q.fare_cents,
        currency=q.currency,
        surge_multiplier=q.surge_multiplier,
        distance_m=q.distance_m,
        duration_s=q.duration_s,
        expires_at=utcnow() + QUOTE_TTL,
    )
    session.add(quote)
    return quote


def live_quote(session: Session, quote_id: str, rider_id: str, at: datetime) -> Quote | None:
    """The rider's quote if it had not expired at ``at``; None otherwise."""
    quote = session.get(Quote, quote_id)
    if quote is None or quote.rider_id != rider_id or quote.expires_at <= at:
        return None
    return quote


def quote_covers(quote: Quote, pickup: Point, dropoff: Point) -> bool:
    """Whether the quote was made for this trip (same pickup and dropoff, give or take
    QUOTE_MATCH_M)."""
    return (
        haversine_m(Point(lat=quote.pickup_lat, lng=quote.pickup_lng), pickup) <= QUOTE_MATCH_M
        and haversine_m(Point(lat=quote.dropoff_lat, lng=quote.dropoff_lng), dropoff)
        <= QUOTE_MATCH_M
    )
