"""``GET /v1/rides`` pages newest first with a stable cursor: paging through many rides
while more are being requested visits every ride that existed when paging began exactly
once, in order, and never shows a ride twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlmodel import Session

from domain.status import RideStatus
from store.tables import Ride, utcnow
from tests.support.stack import Stack

BODY = {"pickup": {"lat": 40.75, "lng": -73.99}, "dropoff": {"lat": 40.76, "lng": -73.97}}


async def all_pages(api: Stack, rider: str, query: str = "", role: str = "rider",
                    between_pages: Any = None) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        q = query + (f"&cursor={cursor}" if cursor else "")
        page = (await api.call("GET", f"/v1/rides?{q}", role, rider, want=200)).json()
        pages.append(page["rides"])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        if between_pages is not None:
            await between_pages()


def order_key(ride: dict[str, Any]) -> tuple[str, str]:
    return ride["created_at"], ride["ride_id"]


async def test_paging_while_rides_are_requested(api: Stack) -> None:
    """An admin pages through every ride while riders keep asking for more (each rider
    has one open ride at a time, so each request is another rider's)."""
    riders = iter(range(10_000))

    async def request() -> str:
        rider = f"rider-{next(riders)}"
        r = await api.call("POST", "/v1/rides", "rider", rider, want=202, json=BODY)
        return str(r.json()["ride_id"])

    before = [await request() for _ in range(57)]
    before += await asyncio.gather(*(request() for _ in range(5)))

    # more rides arrive while the admin pages: several between every two pages
    arriving: list[str] = []

    async def more() -> None:
        arriving.extend(await asyncio.gather(*(request() for _ in range(3))))

    pages = await all_pages(api, "ops", "limit=10", role="admin", between_pages=more)
    seen = [r["ride_id"] for page in pages for r in page]
    assert len(seen) == len(set(seen)), "a ride was shown twice"
    assert set(before) <= set(seen), "a ride that existed before paging was skipped"
    assert not set(arriving) & set(seen[10:]), "a newer ride appeared on a later page"
    rides = [r for page in pages for r in page]
    assert [order_key(r) for r in rides] == sorted(map(order_key, rides), reverse=True)
    assert all(len(page) == 10 for page in pages[:-1]) and 0 < len(pages[-1]) <= 10

    # a fresh first page starts with the newest: the last three that arrived
    first = (await api.call("GET", "/v1/rides?limit=3", "admin", "ops", want=200)).json()
    assert {r["ride_id"] for r in first["rides"]} == set(arriving[-3:])
    # a rider sees their own ride only
    mine = (await api.call("GET", "/v1/rides", "rider", "rider-0", want=200)).json()
    assert [r["ride_id"] for r in mine["rides"]] == before[:1]


async def test_ties_and_filters(api: Stack) -> None:
    """Rides created in the same microsecond are ordered by id and split across pages
    without loss; a status filter pages the same way; an admin pages through everyone."""
    now = utcnow()

    def setup(session: Session) -> None:
        for i in range(25):
            same_time = now if i < 15 else now - timedelta(seconds=i)
            session.add(Ride(ride_id=f"ride-{i:02d}", rider_id="cat" if i % 5 else "dan",
                             status=RideStatus.CANCELLED if i % 2 else RideStatus.MATCHING,
                             pickup_lat=40.75, pickup_lng=-73.99, dropoff_lat=40.76,
                             dropoff_lng=-73.97, created_at=same_time, updated_at=same_time))

    await api.db.write(setup)
    cats = [r["ride_id"] for p in await all_pages(api, "cat", "limit=4") for r in p]
    expected = sorted((f"ride-{i:02d}" for i in range(25) if i % 5),
                      key=lambda rid: (now if int(rid[5:]) < 15 else
                                       now - timedelta(seconds=int(rid[5:])), rid),
                      reverse=True)
    assert cats == expected
    cancelled = [r for p in await all_pages(api, "cat", "limit=3&status=cancelled")
                 for r in p]
    assert {r["status"] for r in cancelled} == {RideStatus.CANCELLED}
    assert [r["ride_id"] for r in cancelled] == [rid for rid in expected if int(rid[5:]) % 2]
    everyone = [r for p in await all_pages(api, "root", "limit=7", role="admin") for r in p]
    assert len(everyone) == 25 and len({r["ride_id"] for r in everyone}) == 25
    assert (await api.call("GET", "/v1/rides?limit=100", "rider", "nobody", want=200)).json() \
        == {"rides": [], "next_cursor": None}
