"""Pricing rules: the tariff, trip estimates from H3, the fare formula and surge.

Plain functions of their arguments; ``activities.pricing`` applies them in the saga and
``store.quotes`` when a rider asks for a quote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

import h3

from domain.geo import Point, haversine_m

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
# A quote is for one trip: a ride whose pickup or dropoff is further than this from the
# quote's is priced afresh.
QUOTE_MATCH_M = 100.0
# The longest trip, pickup to dropoff in a straight line (RIDEHAIL_MAX_TRIP_KM's default).
MAX_TRIP_KM = 150.0
MAX_TRIP_KM_LIMIT = 1000.0  # the most RIDEHAIL_MAX_TRIP_KM may be set to
# A driven route may be up to this many times its straight line (detours, a closed
# road): the trip report's distance cap is the longest trip times this.
DRIVEN_ROUTE_FACTOR = 2.0


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


def largest_fare_cents(max_trip_km: float) -> int:
    """The largest fare a trip of at most ``max_trip_km`` (straight line) is quoted: the
    route estimate of the longest such trip at the highest surge."""
    distance = max_trip_km * 1000 * DETOUR_FACTOR
    return fare_cents(distance, distance / AVERAGE_SPEED_MPS, SURGE_MAX)


def longest_route_m(max_trip_km: float) -> int:
    """The longest distance a driver may report for a trip of at most ``max_trip_km``."""
    return round(max_trip_km * 1000 * DRIVEN_ROUTE_FACTOR)
