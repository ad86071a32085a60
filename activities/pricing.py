"""Pricing: trip estimates from H3, the fare formula, surge per zone, quotes.

The rules are plain functions; ``PricingActivities.quote_fare`` applies them in the saga
and ``make_quote`` serves ``POST /v1/quotes``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import h3
from sqlmodel import Session, col, func, select
from temporalio import activity

from ridehail.domain.geo import DRIVER_CELL_RES, Point, haversine_m, zone_cell
from ridehail.domain.money import CURRENCY
from ridehail.store.db import Database
from ridehail.store.tables import Driver, Quote, Ride, utcnow
from workflows import types as wt
from workflows.types import A, FareQuote, QuoteRequest

log = logging.getLogger(__name__)

# Tariff (cents). A city would load these from configuration; one tariff suffices here.
BASE_CENTS = 250
PER_KM_CENTS = 120
PER_MIN_CENTS = 30
MINIMUM_CENTS = 700
# Road distance is longer than the straight line; city traffic averages ~25 km/h.
DETOUR_FACTOR = 1.3
AVERAGE_SPEED_MPS = 25 / 3.6
SURGE_MAX = 3.0
SURGE_STEP = 0.1
SURGE_PER_SHORTAGE = 0.25  # +0.25 for every extra open request per available driver
QUOTE_TTL = timedelta(minutes=5)
# H3 resolution 9 cells (~174 m edge) measure trips; centres are ~300 m apart.
_TRIP_RES = 9
_RES9_CENTRE_SPACING_M = 174.4 * math.sqrt(3)
OPEN_STATUSES = ("requested", "matching")
# A quote is for one trip: a ride whose pickup or dropoff is further than this from the
# quote's is priced afresh.
QUOTE_MATCH_M = 100.0


def map_point(p: wt.Point | Point) -> Point:
    """The boundary type of a point (``workflows.types.Point``) as the one ``ridehail.domain.geo``
    computes with."""
    return p if isinstance(p, Point) else Point(lat=p.lat, lng=p.lng)


@dataclass(frozen=True)
class TripEstimate:
    distance_m: int
    duration_s: int


def estimate_trip(pickup: Point, dropoff: Point) -> TripEstimate:
    """Road distance and driving time from pickup to dropoff.

    The H3 grid distance between the two res-9 cells approximates a path through the
    street grid; it is floored by the straight-line distance times a detour factor, and
    falls back to that when the cells are too far apart for a grid path.
    """
    straight = haversine_m(pickup, dropoff)
    estimate = straight * DETOUR_FACTOR
    try:
        a = h3.latlng_to_cell(pickup.lat, pickup.lng, _TRIP_RES)
        b = h3.latlng_to_cell(dropoff.lat, dropoff.lng, _TRIP_RES)
        estimate = max(estimate, h3.grid_distance(a, b) * _RES9_CENTRE_SPACING_M)
    except h3.H3BaseException:
        pass
    distance = round(estimate)
    return TripEstimate(distance, round(distance / AVERAGE_SPEED_MPS))


def fare_cents(distance_m: float, duration_s: float, surge: float) -> int:
    """base + per km + per minute, times surge, never below the minimum fare."""
    raw = BASE_CENTS + PER_KM_CENTS * distance_m / 1000 + PER_MIN_CENTS * duration_s / 60
    return max(MINIMUM_CENTS, round(raw * surge))


def surge_multiplier(open_requests: int, available_drivers: int) -> float:
    """1.0 while there are at least as many available drivers as open requests, then
    rising by SURGE_PER_SHORTAGE per extra request per driver (with no driver at all,
    each request beyond the first counts in full), rounded half-up to 0.1 and capped at
    SURGE_MAX."""
    if open_requests <= available_drivers:
        return 1.0
    ratio = open_requests / max(available_drivers, 1)
    surge = 1.0 + SURGE_PER_SHORTAGE * (ratio - 1)
    # half-up in steps of 0.1 (round() would round 1.25 to 1.2 but 1.35 to 1.4)
    steps = math.floor(surge / SURGE_STEP + 0.5 + 1e-9)
    return min(SURGE_MAX, max(1.0, round(steps * SURGE_STEP, 1)))


def zone_surge(session: Session, pickup: Point, exclude_ride: str | None = None) -> float:
    """Surge for the pickup's zone: open requests in the zone and its neighbours against
    available drivers there. ``exclude_ride`` leaves out the ride being priced, so a ride
    is priced as its quote was (before it existed)."""
    zones = h3.grid_disk(zone_cell(pickup), 1)
    driver_cells = [c for z in zones for c in h3.cell_to_children(z, DRIVER_CELL_RES)]
    drivers = session.exec(
        select(func.count())
        .select_from(Driver)
        .where(Driver.status == "available")
        .where(col(Driver.h3_cell).in_(driver_cells))
    ).one()
    open_rides = (
        select(func.count())
        .select_from(Ride)
        .where(col(Ride.status).in_(OPEN_STATUSES))
        .where(col(Ride.pickup_zone).in_(zones))
    )
    if exclude_ride is not None:
        open_rides = open_rides.where(col(Ride.ride_id) != exclude_ride)
    requests = session.exec(open_rides).one()
    return surge_multiplier(int(requests), int(drivers))


def price(
    session: Session, pickup: Point, dropoff: Point, exclude_ride: str | None = None
) -> FareQuote:
    trip = estimate_trip(pickup, dropoff)
    surge = zone_surge(session, pickup, exclude_ride)
    return FareQuote(
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


class PricingActivities:
    def __init__(self, db: Database) -> None:
        self.db = db

    @activity.defn(name=A.quote_fare)
    async def quote_fare(self, req: QuoteRequest) -> FareQuote:
        """The ride's price: its live quote if it was requested with one, else priced now."""

        pickup, dropoff = map_point(req.pickup), map_point(req.dropoff)

        def run(session: Session) -> FareQuote:
            if req.quote_id:
                # the quote must have been live when the ride was requested (the api
                # checked that), however long the saga took to get here
                ride = session.get(Ride, req.ride_id)
                requested_at = ride.created_at if ride else datetime.now(UTC)
                quote = live_quote(session, req.quote_id, req.rider_id, requested_at)
                if quote is not None and quote_covers(quote, pickup, dropoff):
                    return FareQuote(
                        fare_cents=quote.fare_cents,
                        currency=quote.currency,
                        surge_multiplier=quote.surge_multiplier,
                        distance_m=quote.distance_m,
                        duration_s=quote.duration_s,
                        quote_id=quote.quote_id,
                    )
                log.warning(
                    "ride %s: quote %s is not live or not for this trip; pricing afresh",
                    req.ride_id,
                    req.quote_id,
                )
            return price(session, pickup, dropoff, exclude_ride=req.ride_id)

        return await self.db.read(run)
