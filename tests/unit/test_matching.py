"""Matching: ranking, the widening search, and atomic reservation — many concurrent
attempts on one driver, on SQLite and PostgreSQL, and exactly one wins."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from sqlmodel import Session, select

from activities.matching import nearby_available, reserve_nearest
from domain.geo import Point, driver_cell
from domain.matching import rank_candidates
from store import transitions
from store.db import Database
from store.tables import Driver, Offer, utcnow
from workflows.types import ReserveRequest

T = TypeVar("T")
PICKUP = Point(lat=40.75, lng=-73.99)
ATTEMPTS = 16


def _driver(driver_id: str, lat: float, lng: float, status: str = "available") -> Driver:
    at = Point(lat=lat, lng=lng)
    return Driver(driver_id=driver_id, status=status, lat=lat, lng=lng, h3_cell=driver_cell(at))


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.create_tables()
    yield database
    database.dispose()


def test_rank_candidates_nearest_first_ties_by_id() -> None:
    drivers = [
        _driver("far", 40.76, -73.99),
        _driver("b-near", 40.751, -73.99),
        _driver("a-near", 40.751, -73.99),  # same spot as b-near: id breaks the tie
        _driver("nearest", 40.7501, -73.99),
    ]
    ranked = rank_candidates(PICKUP, drivers)
    assert [d.driver_id for d in ranked] == ["nearest", "a-near", "b-near", "far"]
    assert rank_candidates(PICKUP, []) == []


def test_the_search_widens_until_it_finds_someone(db: Database) -> None:
    with db.writing() as s:
        s.add(_driver("eight-km", 40.75 + 0.07, -73.99))  # ~7.8 km north
        s.add(_driver("offline", 40.7501, -73.99, status="offline"))
        s.add(_driver("busy", 40.7502, -73.99, status="on_trip"))
        s.add(_driver("antipodes", -40.75, 106.0))
    with db.reading() as s:
        assert [d.driver_id for d in nearby_available(s, PICKUP, [])] == ["eight-km"]
        assert nearby_available(s, PICKUP, ["eight-km"]) == []
    with db.writing() as s:
        s.add(_driver("two-km", 40.75 + 0.018, -73.99))
        s.add(_driver("one-km", 40.75 + 0.009, -73.99))
    with db.reading() as s:
        # the smallest ring with anyone in it, nearest first; the far one is not reached
        found = [d.driver_id for d in nearby_available(s, PICKUP, [])]
        assert found[0] == "one-km" and "eight-km" not in found
        assert [d.driver_id for d in nearby_available(s, PICKUP, ["one-km", "two-km"])] == [
            "eight-km"
        ]


def _race(db: Database, n: int, attempt: Callable[[Session, int], T]) -> list[T]:
    """Run ``attempt`` in ``n`` write transactions at once (threads released together)."""
    gate = threading.Barrier(n)

    def one(i: int) -> T:
        gate.wait()
        with db.writing() as session:
            return attempt(session, i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_concurrent_reservations_of_one_driver_let_exactly_one_win(db: Database) -> None:
    with db.writing() as s:
        s.add(_driver("d1", 40.7505, -73.9905))
    won = _race(db, ATTEMPTS, lambda s, i: transitions.reserve(s, "d1", f"ride-{i}", utcnow()))
    assert won.count(True) == 1
    winner = won.index(True)
    with db.reading() as s:
        d1 = s.get(Driver, "d1")
        assert d1 is not None and (d1.status, d1.ride_id) == ("reserved", f"ride-{winner}")
    # and a reserved driver cannot be reserved again
    with db.writing() as s:
        assert not transitions.reserve(s, "d1", "late-ride", utcnow())


def _request(ride_id: str, attempt: int = 1, exclude: list[str] | None = None) -> ReserveRequest:
    return ReserveRequest(
        ride_id=ride_id,
        rider_id=f"rider-{ride_id}",
        pickup=PICKUP,
        dropoff=Point(lat=40.76, lng=-73.97),
        fare_cents=900,
        currency="USD",
        attempt=attempt,
        exclude=exclude or [],
        offer_timeout_s=15,
    )


def test_concurrent_rides_each_get_a_different_driver_or_none(db: Database) -> None:
    """Many rides matching at once against fewer drivers: every driver goes to one ride,
    each ride gets at most one driver, the rest find nobody."""
    drivers = [f"d{i}" for i in range(5)]
    with db.writing() as s:
        for i, d in enumerate(drivers):
            s.add(_driver(d, 40.7505 + i * 0.0005, -73.9905))

    def match(session: Session, i: int) -> str | None:
        offer = reserve_nearest(session, _request(f"r{i}"), f"r{i}:1", utcnow())
        return offer.driver_id if offer else None

    got = _race(db, ATTEMPTS, match)
    assigned = [d for d in got if d is not None]
    assert sorted(assigned) == drivers  # each driver exactly once
    with db.reading() as s:
        rows = list(s.exec(select(Driver)))
        assert all(d.status == "reserved" for d in rows)
        assert sorted(d.ride_id or "" for d in rows) == sorted(
            f"r{i}" for i, d in enumerate(got) if d is not None
        )
        assert len(list(s.exec(select(Offer)))) == len(drivers)


def test_a_retried_reservation_returns_its_first_offer(db: Database) -> None:
    with db.writing() as s:
        s.add(_driver("d1", 40.7505, -73.9905))
        s.add(_driver("d2", 40.7510, -73.9905))
    with db.writing() as s:
        first = reserve_nearest(s, _request("r1"), "r1:1", utcnow())
        assert first is not None and first.driver_id == "d1"
    with db.writing() as s:
        again = reserve_nearest(s, _request("r1"), "r1:1", utcnow())
        assert again is not None and again.driver_id == "d1"
    with db.reading() as s:
        d2 = s.get(Driver, "d2")
        assert d2 is not None and d2.status == "available"  # not reserved by the retry
    with db.writing() as s:
        # the next search of that ride skips the driver it excluded
        nxt = reserve_nearest(s, _request("r1", attempt=2, exclude=["d1"]), "r1:2", utcnow())
        assert nxt is not None and nxt.driver_id == "d2"
