"""``Idempotency-Key`` on ``POST /v1/rides``: however many concurrent repeats, one ride
and one ``ride.requested``; the same key with another body is a 422; keys are each
rider's own. On SQLite and on PostgreSQL (where concurrent inserts really race)."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlmodel import Session, col, func, select

from store.tables import IdempotencyKey, OutboxEvent, Ride
from tests.support.stack import Stack

BODY = {"pickup": {"lat": 40.75, "lng": -73.99}, "dropoff": {"lat": 40.76, "lng": -73.97}}
CONCURRENT = 24


async def post(api: Stack, rider: str, key: str, body: dict[str, Any]) -> Any:
    return await api.http.post("/v1/rides", json=body,
                               headers={**api.auth("rider", rider), "Idempotency-Key": key})


def rides_of(api: Stack, rider: str) -> list[Ride]:
    return api.query(lambda s: list(s.exec(select(Ride).where(Ride.rider_id == rider))))


def requested_events(session: Session, ride_ids: list[str]) -> int:
    q = select(func.count()).select_from(OutboxEvent).where(
        col(OutboxEvent.aggregate_id).in_(ride_ids)).where(
        col(OutboxEvent.subject).like("%.requested"))
    return int(session.exec(q).one())


async def test_concurrent_repeats_make_one_ride(api: Stack) -> None:
    answers = await asyncio.gather(*(post(api, "ann", "k-1", BODY) for _ in range(CONCURRENT)))
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
    ride_ids = {a.json()["ride_id"] for a in answers}
    assert len(ride_ids) == 1
    (ride_id,) = ride_ids
    assert all(a.headers["location"] == f"/v1/rides/{ride_id}" for a in answers)
    replayed = [a for a in answers if a.headers.get("idempotent-replayed") == "true"]
    assert len(replayed) == CONCURRENT - 1
    assert [r.ride_id for r in rides_of(api, "ann")] == [ride_id]
    assert api.query(lambda s: requested_events(s, [ride_id])) == 1
    # and a repeat long after is the same ride too
    again = await post(api, "ann", "k-1", BODY)
    assert again.status_code == 202 and again.json()["ride_id"] == ride_id


async def test_concurrent_repeats_with_different_bodies(api: Stack) -> None:
    """Racing requests with one key and different bodies: one wins, the rest are told
    the key was used with another body."""
    bodies = [{**BODY, "pickup": {"lat": 40.75 + i / 1000, "lng": -73.99}}
              for i in range(CONCURRENT)]
    answers = await asyncio.gather(*(post(api, "ann", "k-2", b) for b in bodies))
    won = [a for a in answers if a.status_code == 202]
    assert len(won) == 1, [a.status_code for a in answers]
    refused = [a for a in answers if a.status_code == 422]
    assert len(refused) == CONCURRENT - 1
    assert all(a.json()["errors"][0]["field"] == "header.Idempotency-Key" for a in refused)
    assert len(rides_of(api, "ann")) == 1


async def test_same_key_other_body_is_422(api: Stack) -> None:
    first = await post(api, "ann", "k-3", BODY)
    assert first.status_code == 202
    other = await post(api, "ann", "k-3", {**BODY, "payment_method": "card_declined"})
    assert other.status_code == 422, other.text
    assert other.headers["content-type"].startswith("application/problem+json")
    assert other.json()["errors"] == [{"field": "header.Idempotency-Key",
                                       "message": "reused with another body"}]
    # spelling out a default is the same body
    same = await post(api, "ann", "k-3", {**BODY, "payment_method": "card"})
    assert same.status_code == 202 and same.json()["ride_id"] == first.json()["ride_id"]
    # another key, or none, is another ride: refused while ann's first has not ended
    for headers in ({"Idempotency-Key": "k-4"}, {}):
        plain = await api.http.post("/v1/rides", json=BODY,
                                    headers={**api.auth("rider", "ann"), **headers})
        assert plain.status_code == 409, plain.text
        assert plain.json()["open_ride_id"] == first.json()["ride_id"]
    assert len(rides_of(api, "ann")) == 1


async def test_keys_are_scoped_to_the_rider(api: Stack) -> None:
    answers = await asyncio.gather(*(post(api, rider, "shared-key", BODY)
                                     for rider in ("ann", "ben", "ann", "ben")))
    assert all(a.status_code == 202 for a in answers)
    by_rider = {a.json()["rider_id"]: a.json()["ride_id"] for a in answers}
    assert set(by_rider) == {"ann", "ben"} and by_rider["ann"] != by_rider["ben"]
    # ben's key does not reveal or replay ann's ride, even with ann's body
    assert (await post(api, "ben", "shared-key", BODY)).json()["ride_id"] == by_rider["ben"]
    keys = api.query(lambda s: list(s.exec(select(IdempotencyKey))))
    assert sorted((k.rider_id, k.ride_id) for k in keys) == sorted(by_rider.items())
