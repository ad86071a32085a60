"""Live streams, read as a plain SSE client reads them: a ride's events (history, then
live, ending with the ride; each event's id its position in the event log, resumable by
``Last-Event-ID``), a driver's offers as they are made, and nothing left behind on NATS
by clients that go away."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlmodel import col, select

from domain.status import RideStatus
from events import catalog as c
from events.envelope import new_event
from events.outbox import publish, stage
from infra.config import Settings
from ridehail.load.apiclient import SseEvent, sse_events
from store.tables import OutboxEvent
from tests.support.stack import Stack, eventually, running_stack

PICKUP = {"lat": 40.75, "lng": -73.99}
DROPOFF = {"lat": 40.76, "lng": -73.97}
TERMINAL = {"ride.completed", "ride.cancelled", "ride.failed"}


def logged(stack: Stack, ride_id: str) -> list[tuple[int, str]]:
    """The ride's events in the outbox: (position, event id), in position order."""
    return stack.query(lambda s: [(r.position or 0, r.event_id) for r in s.exec(
        select(OutboxEvent).where(OutboxEvent.aggregate_id == ride_id)
        .order_by(col(OutboxEvent.position)))])


def sse_headers(stack: Stack, role: str, sub: str, **extra: str) -> dict[str, str]:
    return {**stack.auth(role, sub), "Accept": "text/event-stream", **extra}


async def read_until_end(stack: Stack, path: str, role: str, sub: str, *,
                         timeout: float = 30, **headers: str) -> list[SseEvent]:
    """Every event of a stream that must end by itself within ``timeout``."""
    events: list[SseEvent] = []
    async with asyncio.timeout(timeout):
        async with stack.http.stream("GET", path, headers=sse_headers(stack, role, sub,
                                                                       **headers)) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            async for event in sse_events(r):
                events.append(event)
    return events


async def request_ride(stack: Stack, rider: str, **extra: Any) -> str:
    r = await stack.call("POST", "/v1/rides", "rider", rider, want=202,
                         json={"pickup": PICKUP, "dropoff": DROPOFF, **extra})
    return str(r.json()["ride_id"])


async def driver_online(stack: Stack, driver: str, at: dict[str, float]) -> None:
    await stack.call("PUT", "/v1/drivers/me", "driver", driver, want=200, json={
        "name": driver, "vehicle": {"make": "Kia", "model": "Niro", "plate": driver}})
    await stack.call("POST", "/v1/drivers/me/online", "driver", driver, want=200, json=at)

    async def available() -> bool:
        me = await stack.call("GET", "/v1/drivers/me", "driver", driver, want=200)
        return bool(me.json()["status"] == "available")

    await eventually(available, f"{driver} to be available")


async def test_ride_stream_is_history_then_live_until_the_end(stack: Stack) -> None:
    ride_id = await request_ride(stack, "ann")
    received: list[SseEvent] = []
    async with asyncio.timeout(60):
        async with stack.http.stream("GET", f"/v1/rides/{ride_id}/events",
                                     headers=sse_headers(stack, "rider", "ann")) as r:
            assert r.status_code == 200
            async for event in sse_events(r):
                received.append(event)
                if event.event == "ride.payment_authorized":
                    # the stream is live: what the rider does now shows up on it
                    await stack.call("POST", f"/v1/rides/{ride_id}/cancel", "rider", "ann",
                                     want=202, json={"reason": "testing"})
            # the loop ends because the server ended the stream after ride.cancelled

    types = [e.event for e in received]
    assert types[0] == "ride.requested" and types[-1] == "ride.cancelled", types
    assert "ride.cancellation_requested" in types and "ride.payment_voided" in types
    assert len(set(types) & TERMINAL) == 1
    positions = [int(e.id or 0) for e in received]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    # each event's id is its position in the ride's event log (the outbox)
    assert list(zip(positions, [e.json()["id"] for e in received], strict=True)) == \
        logged(stack, ride_id)
    for e in received:
        ce = e.json()
        assert ce["type"] == e.event and ce["subject"] == ride_id
        assert ce["specversion"] == "1.0" and ce["id"] and ce["data"]["ride_id"] == ride_id

    # the same events, in the same order, as JSON
    as_json = (await stack.call("GET", f"/v1/rides/{ride_id}/events", "rider", "ann",
                                want=200)).json()["events"]
    assert [e["id"] for e in as_json] == [e.json()["id"] for e in received]

    # after the end: the whole history, and the stream closes at once
    again = await read_until_end(stack, f"/v1/rides/{ride_id}/events", "rider", "ann",
                                 timeout=10)
    assert [e.id for e in again] == [e.id for e in received]
    # resuming after an event replays only what followed it
    middle = received[len(received) // 2]
    rest = await read_until_end(stack, f"/v1/rides/{ride_id}/events", "rider", "ann",
                                timeout=10, **{"Last-Event-ID": middle.id or ""})
    assert [e.id for e in rest] == [e.id for e in received[len(received) // 2 + 1:]]
    # resuming after the last event: nothing more to say, and it does not hang
    started = time.monotonic()
    assert await read_until_end(stack, f"/v1/rides/{ride_id}/events", "rider", "ann",
                                timeout=10, **{"Last-Event-ID": received[-1].id or ""}) == []
    assert time.monotonic() - started < 5

    # a stream is subject to the same rules as the JSON: not yours, no stream
    r = await stack.http.get(f"/v1/rides/{ride_id}/events",
                             headers=sse_headers(stack, "rider", "ben"))
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_live_events_published_without_their_position(stack: Stack) -> None:
    """A message without the position header (an older publisher's, a redriven dead
    letter's): its position is looked up in the event log; one already sent is not
    sent again, and one not in the log is not part of the ride's history."""
    await stack.call("PUT", "/v1/drivers/me", "driver", "dora", want=200, json={
        "name": "Dora", "vehicle": {"make": "Kia", "model": "Niro", "plate": "D-1"}})
    ride_id = await request_ride(stack, "ann")  # no driver online: it stays matching
    await stack.wait_status(ride_id, "ann", RideStatus.MATCHING)
    received: list[SseEvent] = []
    async with asyncio.timeout(30):
        async with stack.http.stream("GET", f"/v1/rides/{ride_id}/events",
                                     headers=sse_headers(stack, "rider", "ann")) as r:
            events = sse_events(r)
            received += [await anext(events), await anext(events)]
            assert [e.event for e in received] == ["ride.requested", "ride.payment_authorized"]
            requested = received[0].data.encode()
            # the request again, as a redrive publishes it (no position), and an event
            # that is in no log at all
            await stack.rt.js.publish(f"rides.{ride_id}.requested", requested,
                                      headers={"Nats-Msg-Id": "copy-of-the-request"})
            stray = new_event("ride.offer_expired", c.OfferExpired(
                ride_id=ride_id, driver_id="dora", offer_id="nowhere"),
                source="test", subject=ride_id)
            await stack.rt.js.publish(stray.nats_subject, stray.to_json(),
                                      headers={"Nats-Msg-Id": stray.id})
            # an event in the log, published without its position (an older publisher)
            late = new_event("ride.offer_expired", c.OfferExpired(
                ride_id=ride_id, driver_id="dora", offer_id="older"),
                source="test", subject=ride_id)
            [row] = await stack.db.write(lambda s: stage(s, [late]))
            await publish(stack.rt.js, row.subject, row.body.encode(), row.event_id)
            async with asyncio.timeout(5):  # from the live tail, not a later re-read
                nxt = await anext(events)
            assert (nxt.json()["id"], nxt.id) == (late.id, str(row.position))
            received.append(nxt)
            await stack.call("POST", f"/v1/rides/{ride_id}/cancel", "rider", "ann", want=202)
            async for event in events:
                received.append(event)
    ids = [e.json()["id"] for e in received]
    assert len(ids) == len(set(ids)) and stray.id not in ids
    assert received[-1].event == "ride.cancelled"
    assert [(int(e.id or 0), e.json()["id"]) for e in received] == logged(stack, ride_id)


async def test_ride_stream_ends_when_the_ride_fails(stack: Stack) -> None:
    ride_id = await request_ride(stack, "ann", payment_method="card_declined")
    events = await read_until_end(stack, f"/v1/rides/{ride_id}/events", "rider", "ann")
    assert [e.event for e in events][-1] == "ride.failed"
    assert events[-1].json()["data"]["reason"] == "payment_declined"


async def test_offers_stream_pushes_offers_as_they_are_made(stack: Stack) -> None:
    await driver_online(stack, "dora", {"lat": 40.7505, "lng": -73.9905})
    await stack.call("PUT", "/v1/drivers/me", "driver", "dave", want=200, json={
        "name": "Dave", "vehicle": {"make": "Kia", "model": "Niro", "plate": "D-2"}})
    async with asyncio.timeout(60):
        async with stack.http.stream("GET", "/v1/drivers/me/offers",
                                     headers=sse_headers(stack, "driver", "dora")) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = sse_events(r)
            ride_id = await request_ride(stack, "ann")  # after the stream opened
            offer = await anext(events)
            assert offer.event == "offer"
            body = offer.json()
            assert body["ride_id"] == ride_id and body["pickup"] == PICKUP
            assert body["dropoff"] == DROPOFF and float(body["fare"]) > 0
            assert offer.id == body["offer_id"]

            # a second stream opened now gets the pending offer straight away
            async with stack.http.stream("GET", "/v1/drivers/me/offers",
                                         headers=sse_headers(stack, "driver", "dora")) as r2:
                assert (await anext(sse_events(r2))).json()["offer_id"] == body["offer_id"]

            # another driver cannot answer it: for them the ride does not exist
            await stack.call("POST", f"/v1/rides/{ride_id}/accept", "driver", "dave", want=404)
            await stack.call("POST", f"/v1/rides/{ride_id}/accept", "driver", "dora", want=202)
            assigned = await stack.wait_status(ride_id, "ann", RideStatus.DRIVER_ASSIGNED)
            assert assigned["driver_id"] == "dora"
    # dave's own stream has nothing for him
    pending = await stack.call("GET", "/v1/drivers/me/offers", "driver", "dave", want=200)
    assert pending.json() == []


async def nats_footprint(stack: Stack) -> tuple[int, int]:
    """(consumers on RIDES, subscriptions on the API's NATS connection)."""
    info = await stack.rt.js.stream_info("RIDES")
    return info.state.consumer_count, len(stack.rt.nc._subs)


async def test_dropped_streams_release_their_nats_resources(stack: Stack) -> None:
    await stack.call("PUT", "/v1/drivers/me", "driver", "dora", want=200, json={
        "name": "Dora", "vehicle": {"make": "Kia", "model": "Niro", "plate": "D-1"}})
    ride_id = await request_ride(stack, "ann")  # no driver: it stays matching meanwhile
    await stack.wait_status(ride_id, "ann", RideStatus.MATCHING)
    baseline = await nats_footprint(stack)

    async def hold(path: str, role: str, sub: str, until: asyncio.Event,
                   first_event: bool) -> None:
        async with stack.http.stream("GET", path, headers=sse_headers(stack, role, sub)) as r:
            assert r.status_code == 200
            # keep the reader referenced: an abandoned one is closed when collected, and
            # closing it closes the connection early
            events = sse_events(r)
            if first_event:
                await anext(events)  # the stream is up: it has sent history
            await until.wait()
            del events
        # leaving the block closes the connection mid-stream, as a client that goes away

    streams = 12
    for round_ in range(3):  # and again, to see nothing accumulates
        drop = asyncio.Event()
        holders = [asyncio.create_task(hold(f"/v1/rides/{ride_id}/events", "rider", "ann",
                                            drop, True)) for _ in range(streams)]
        holders += [asyncio.create_task(hold("/v1/drivers/me/offers", "driver", "dora",
                                             drop, False)) for _ in range(streams)]

        async def all_open() -> tuple[int, int] | None:
            # every stream counted open (each reads its history from the database, so
            # the shared feed's subscription is up before the last of them is)
            gauge = (await stack.http.get("/metrics")).text
            if f'ridehail_sse_streams_open{{stream="ride_events"}} {streams}.0' not in gauge:
                return None
            consumers, subs = await nats_footprint(stack)
            # one consumer and one subscription for all the ride streams together
            # (api.fanout), one of each for all the offer streams together
            grown = (consumers - baseline[0], subs - baseline[1])
            return grown if grown == (2, 2) else None

        await eventually(all_open, f"round {round_}: {2 * streams} streams to be open")
        drop.set()
        await asyncio.gather(*holders)

        async def released() -> bool:
            return await nats_footprint(stack) == baseline

        await eventually(released, f"round {round_}: the streams' NATS resources to go",
                         timeout=10)
    gauge = (await stack.http.get("/metrics")).text
    assert 'ridehail_sse_streams_open{stream="ride_events"} 0.0' in gauge
    assert 'ridehail_sse_streams_open{stream="driver_offers"} 0.0' in gauge


async def test_open_streams_do_not_hold_up_shutdown(settings: Settings) -> None:
    """Live streams never end by themselves; stopping the API ends them rather than
    waiting out the server's graceful-shutdown timeout (10 s) for their clients."""
    ended = asyncio.Event()

    async def listen(api: Stack, opened: asyncio.Event) -> None:
        async with api.http.stream("GET", "/v1/drivers/me/offers",
                                   headers=sse_headers(api, "driver", "dora")) as r:
            opened.set()
            async for _ in sse_events(r):
                pass
        ended.set()  # the server finished the response: a clean end, not a reset

    async with asyncio.timeout(8):
        async with running_stack(settings, components=("api",)) as api:
            opened = asyncio.Event()
            listener = asyncio.create_task(listen(api, opened))
            await opened.wait()
            await eventually(lambda: _hub_open(api), "the offer stream to be listening")
        await listener
    assert ended.is_set()


async def _hub_open(api: Stack) -> bool:
    return bool((await api.rt.js.stream_info("RIDES")).state.consumer_count >= 1)
