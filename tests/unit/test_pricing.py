"""Pricing rules: trip estimates, the fare formula, surge, and quotes that expire."""

from __future__ import annotations

from datetime import timedelta

import pytest

from activities.pricing import map_point
from domain.geo import Point, driver_cell, haversine_m, zone_cell
from domain.pricing import (
    BASE_CENTS,
    MINIMUM_CENTS,
    PER_KM_CENTS,
    PER_MIN_CENTS,
    QUOTE_TTL,
    SURGE_MAX,
    estimate_trip,
    fare_cents,
    surge_multiplier,
)
from domain.status import RideStatus
from store.db import Database
from store.quotes import live_quote, make_quote, quote_covers, zone_surge
from store.tables import Driver, Ride, utcnow
from workflows import types as wt

TIMES_SQUARE = Point(lat=40.758, lng=-73.9855)
UNION_SQUARE = Point(lat=40.7359, lng=-73.9911)


# --- estimate_trip -------------------------------------------------------------------------


def test_a_trip_is_longer_than_the_straight_line_and_takes_city_speed() -> None:
    trip = estimate_trip(TIMES_SQUARE, UNION_SQUARE)
    straight = haversine_m(TIMES_SQUARE, UNION_SQUARE)
    assert straight * 1.25 < trip.distance_m < straight * 1.8
    # ~25 km/h
    assert trip.duration_s == pytest.approx(trip.distance_m / (25 / 3.6), rel=0.01)


def test_no_trip_when_pickup_is_dropoff() -> None:
    trip = estimate_trip(TIMES_SQUARE, TIMES_SQUARE)
    assert (trip.distance_m, trip.duration_s) == (0, 0)


def test_estimates_grow_with_distance_and_work_across_the_world() -> None:
    near = estimate_trip(TIMES_SQUARE, Point(lat=40.76, lng=-73.98))
    far = estimate_trip(TIMES_SQUARE, UNION_SQUARE)
    london = estimate_trip(TIMES_SQUARE, Point(lat=51.5, lng=-0.12))  # no H3 grid path
    assert near.distance_m < far.distance_m < london.distance_m
    assert london.distance_m >= haversine_m(TIMES_SQUARE, Point(lat=51.5, lng=-0.12))


# --- fare_cents ---------------------------------------------------------------------------


def test_fare_is_base_plus_distance_plus_time() -> None:
    # 10 km, 20 min: 250 + 1200 + 600
    assert fare_cents(10_000, 1_200, 1.0) == BASE_CENTS + 10 * PER_KM_CENTS + 20 * PER_MIN_CENTS


def test_surge_multiplies_the_whole_fare_and_rounds_to_the_cent() -> None:
    assert fare_cents(10_000, 1_200, 1.5) == 3075
    assert fare_cents(1_234, 321, 1.3) == round((250 + 1.234 * 120 + 321 / 60 * 30) * 1.3)


def test_short_trips_pay_the_minimum_fare_even_with_surge() -> None:
    assert fare_cents(0, 0, 1.0) == MINIMUM_CENTS
    assert fare_cents(500, 60, 1.2) == MINIMUM_CENTS


def test_fare_never_shrinks_with_a_longer_trip() -> None:
    fares = [fare_cents(d, d // 7, 1.0) for d in range(0, 30_000, 500)]
    assert fares == sorted(fares)


# --- surge_multiplier ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requests", "drivers", "surge"),
    [
        (0, 0, 1.0),
        (0, 5, 1.0),
        (5, 5, 1.0),  # as many drivers as requests: no surge
        (1, 0, 1.0),  # a lone request with nobody around is not a shortage to price
        (3, 2, 1.1),  # 1.125 → 1.1
        (2, 1, 1.3),  # 1.25 rounds half up
        (9, 4, 1.3),  # 1.3125
        (5, 1, 2.0),
        (5, 0, 2.0),  # no driver counts as one
        (9, 1, 3.0),
        (1_000, 1, SURGE_MAX),  # bounded
    ],
)
def test_surge_rises_with_the_shortage_rounded_and_bounded(
    requests: int, drivers: int, surge: float
) -> None:
    assert surge_multiplier(requests, drivers) == surge


def test_surge_is_a_tenth_step_between_one_and_the_cap() -> None:
    for requests in range(0, 60):
        for drivers in range(0, 12):
            s = surge_multiplier(requests, drivers)
            assert 1.0 <= s <= SURGE_MAX
            assert round(s * 10) == pytest.approx(s * 10)


def test_surge_never_falls_as_requests_grow() -> None:
    for drivers in range(0, 6):
        seq = [surge_multiplier(r, drivers) for r in range(0, 40)]
        assert seq == sorted(seq)


# --- map_point, quote_covers ----------------------------------------------------------------


def test_map_point_converts_the_workflow_boundary_point() -> None:
    p = map_point(wt.Point(lat=1.5, lng=2.5))
    assert isinstance(p, Point) and (p.lat, p.lng) == (1.5, 2.5)
    assert map_point(TIMES_SQUARE) is TIMES_SQUARE
    # and the other way: the trigger hands the event's domain.geo.Point to RideInput
    ride = wt.RideInput(ride_id="x", rider_id="r", pickup=TIMES_SQUARE, dropoff=UNION_SQUARE)
    assert isinstance(ride.pickup, wt.Point) and ride.pickup.lat == TIMES_SQUARE.lat


# --- quotes and surge against the database -------------------------------------------------


@pytest.fixture
def db(database_url: str):  # type: ignore[no-untyped-def]
    database = Database(database_url)
    database.create_tables()
    yield database
    database.dispose()


def test_a_quote_is_live_for_its_rider_until_it_expires(db: Database) -> None:
    with db.writing() as s:
        quote = make_quote(s, "r1", TIMES_SQUARE, UNION_SQUARE, quote_id="q1")
        quote_id = quote.quote_id
    made = quote.created_at
    assert quote.expires_at - made == pytest.approx(QUOTE_TTL, abs=timedelta(seconds=1))
    trip = estimate_trip(TIMES_SQUARE, UNION_SQUARE)
    assert (quote.distance_m, quote.surge_multiplier) == (trip.distance_m, 1.0)
    assert quote.fare_cents == fare_cents(trip.distance_m, trip.duration_s, 1.0)
    with db.reading() as s:
        assert live_quote(s, quote_id, "r1", made + timedelta(minutes=4)) is not None
        assert live_quote(s, quote_id, "r1", quote.expires_at) is None  # expired
        assert live_quote(s, quote_id, "r1", made + timedelta(minutes=6)) is None
        assert live_quote(s, quote_id, "someone-else", made) is None
        assert live_quote(s, "no-such-quote", "r1", made) is None
        stored = live_quote(s, quote_id, "r1", utcnow())
        assert stored is not None
        assert quote_covers(stored, TIMES_SQUARE, UNION_SQUARE)
        assert quote_covers(stored, Point(lat=40.7581, lng=-73.9856), UNION_SQUARE)
        assert not quote_covers(stored, TIMES_SQUARE, Point(lat=40.70, lng=-74.01))


def _ride(ride_id: str, at: Point, status: str = "matching") -> Ride:
    return Ride(
        ride_id=ride_id,
        rider_id=f"r-{ride_id}",
        status=status,
        pickup_lat=at.lat,
        pickup_lng=at.lng,
        dropoff_lat=UNION_SQUARE.lat,
        dropoff_lng=UNION_SQUARE.lng,
        pickup_zone=zone_cell(at),
    )


def _driver(driver_id: str, at: Point, status: str = "available") -> Driver:
    return Driver(
        driver_id=driver_id, status=status, lat=at.lat, lng=at.lng, h3_cell=driver_cell(at)
    )


def test_surge_is_per_zone_from_open_requests_against_available_drivers(db: Database) -> None:
    london = Point(lat=51.5, lng=-0.12)
    with db.writing() as s:
        s.add(_driver("d1", Point(lat=40.759, lng=-73.986)))
        s.add(_driver("d-busy", TIMES_SQUARE, status="on_trip"))  # not available
        s.add(_driver("d-far", london))  # another zone
        for i in range(4):
            s.add(_ride(f"open{i}", TIMES_SQUARE))
        s.add(_ride("done", TIMES_SQUARE, status=RideStatus.COMPLETED))  # not open
        s.add(_ride("elsewhere", london))
    with db.reading() as s:
        # 4 open requests against 1 available driver: 1 + 0.25 * 3 = 1.75 → 1.8
        assert zone_surge(s, TIMES_SQUARE) == 1.8
        # the ride being priced does not count against itself
        assert zone_surge(s, TIMES_SQUARE, exclude_ride="open0") == surge_multiplier(3, 1)
        # London: one open request, one driver
        assert zone_surge(s, london) == 1.0
        # far from the open requests there is no shortage
        assert zone_surge(s, Point(lat=40.70, lng=-73.80)) == 1.0
