"""The event backbone against a real nats-server: outbox and relay across a broker
outage, retries and the dead-letter queue, duplicates, per-ride ordering with several
consumer processes, and consumers surviving a broker restart."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime

import nats
from nats.aio.msg import Msg
from sqlmodel import col, select

from domain.status import RideStatus
from events.consumer import ConsumerRunner, ConsumerSpec
from events.dlq import list_dead_letters, redrive
from events.envelope import CloudEvent
from events.lag import all_caught_up
from events.outbox import Outbox
from events.streams import ensure_streams
from infra.config import Settings
from ridehail.processes.components import consumer_specs
from store.tables import OutboxEvent, ProcessedEvent
from tests.support.rides import DROPOFF, PICKUP, driver_online, raw_event, wait_offer
from tests.support.ridestream import ride_history
from tests.support.servers import RestartableNats
from tests.support.stack import Stack, eventually, running_stack


async def unpublished(stack: Stack) -> int:
    rows = await stack.db.read(lambda s: list(s.exec(
        select(OutboxEvent.event_id).where(col(OutboxEvent.published_at).is_(None)))))
    return len(rows)


async def test_rides_are_accepted_while_nats_is_down_and_published_once_it_returns(
    settings: Settings, own_nats: RestartableNats
) -> None:
    settings = settings.model_copy(update={"nats_url": own_nats.url})
    async with running_stack(settings, components=("api", "relay")) as stack:
        own_nats.stop()
        await eventually(lambda: _false_when(stack.rt.nc.is_connected), "the client to notice")
        ride_ids = []
        for i in range(5):
            r = await stack.call("POST", "/v1/rides", "rider", f"r{i}", want=202,
                                 json={"pickup": PICKUP, "dropoff": DROPOFF})
            ride_ids.append(r.json()["ride_id"])
            # a second event of the same ride, to check per-ride order after the outage
            await stack.call("POST", f"/v1/rides/{ride_ids[-1]}/cancel", "rider", f"r{i}",
                             want=202, json={"reason": "changed my mind"})
        assert await unpublished(stack) == 10

        await own_nats.restart()

        async def all_published() -> bool:
            return await unpublished(stack) == 0

        await eventually(all_published, "the relay to publish the outbox", timeout=30)

        # Publish everything once more, as if marking it published had failed: JetStream's
        # duplicate window drops every copy.
        await stack.db.write(lambda s: s.exec(  # type: ignore[call-overload]
            OutboxEvent.__table__.update().values(published_at=None)))
        assert await stack.rt.outbox.relay_once(min_age_s=0) == 10

        info = await stack.rt.js.stream_info("RIDES")
        assert info.state.messages == 10
        for ride_id in ride_ids:
            types = [e.type for _, e in await ride_history(stack.rt.js, ride_id)]
            assert types == ["ride.requested", "ride.cancellation_requested"]


async def _false_when(value: bool) -> bool:
    return not value


async def test_a_poison_message_goes_straight_to_the_dlq_and_can_be_listed(
    stack: Stack,
) -> None:
    await stack.rt.js.publish("rides.poison1.driver_arrived", b"{not json",
                              headers={"Nats-Msg-Id": "poison-1"})

    async def dead_letters() -> list:
        letters = await list_dead_letters(stack.rt.js)
        return letters if len(letters) == 3 else []

    letters = await eventually(dead_letters, "the three ride consumers to dead-letter it")
    assert {d.consumer for d in letters} == {"workflow-trigger", "ride-projector", "notifier"}
    for d in letters:
        assert d.original_subject == "rides.poison1.driver_arrived"
        assert d.deliveries == 1 and "not a ridehail CloudEvent" in d.error
        assert d.original_stream == "RIDES" and d.original_seq == 1

    # operators see it on /metrics: DLQ depth, and each consumer group's lag
    metrics = (await stack.http.get("/metrics")).text
    assert "ridehail_dlq_depth 3.0" in metrics.splitlines()
    for group in ("workflow-trigger", "ride-projector", "driver-projector", "notifier"):
        assert f'ridehail_consumer_pending{{consumer="{group}"}} 0.0' in metrics, group
        assert f'ridehail_consumer_ack_pending{{consumer="{group}"}}' in metrics, group


async def test_a_failing_event_is_retried_with_backoff_then_dead_lettered_and_redriven(
    stack: Stack,
) -> None:
    """A driver report for a ride the read model has never seen fails in the projector
    every time; after max_deliver it lands in the DLQ, and a redrive once the ride exists
    applies it."""
    ride_id = uuid.uuid4().hex
    attempts: list[float] = []
    loop = asyncio.get_running_loop()
    projector = next(s for s in consumer_specs(stack.rt, ("ride-projector",)))

    async def counting(event: CloudEvent, msg: Msg) -> None:
        attempts.append(loop.time())
        await projector.handler(event, msg)

    spec = dataclasses.replace(projector, name="test-projector", handler=counting,
                               max_deliver=3, backoff_s=(0.2, 0.6))
    stop = asyncio.Event()
    runner = asyncio.create_task(ConsumerRunner(stack.rt.js, spec).run(stop))
    try:
        await stack.rt.js.publish(
            f"rides.{ride_id}.driver_arrived",
            raw_event("ride.driver_arrived", ride_id, {"ride_id": ride_id, "driver_id": "d1"}))

        async def dead() -> list:
            return [d for d in await list_dead_letters(stack.rt.js)
                    if d.consumer == "test-projector"]

        [letter] = await eventually(dead, "the event to be dead-lettered")
        assert len(attempts) == 3
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert gaps[0] >= 0.15 and gaps[1] >= 0.5, gaps  # growing delays
        assert letter.deliveries == 3 and "before it was requested" in letter.error
        assert letter.original_subject == f"rides.{ride_id}.driver_arrived"
    finally:
        stop.set()
        await runner


async def test_redelivered_and_republished_events_have_no_second_effect(stack: Stack) -> None:
    await driver_online(stack, "d1", {"lat": 40.7505, "lng": -73.9905})
    r = await stack.call("POST", "/v1/rides", "rider", "r1", want=202,
                         json={"pickup": PICKUP, "dropoff": DROPOFF})
    ride_id = r.json()["ride_id"]
    offer = await wait_offer(stack, "d1", ride_id)

    # the same accept event published three times under different message ids (so
    # JetStream keeps all three): one assignment, one signal's worth of effect
    accept = raw_event("ride.driver_accepted", ride_id,
                       {"ride_id": ride_id, "driver_id": "d1", "offer_id": offer["offer_id"]})
    for n in range(3):
        await stack.rt.js.publish(f"rides.{ride_id}.driver_accepted", accept,
                                  headers={"Nats-Msg-Id": f"dup-{n}"})
    # and the original request again, as a relay would after a lost PubAck
    first = (await ride_history(stack.rt.js, ride_id))[0][1]
    await stack.rt.js.publish(f"rides.{ride_id}.requested", first.to_json(),
                              headers={"Nats-Msg-Id": "dup-request"})

    await stack.wait_status(ride_id, "r1", RideStatus.DRIVER_ASSIGNED)
    history = [e.type for _, e in await ride_history(stack.rt.js, ride_id)]
    assert history.count("ride.driver_accepted") == 3
    await eventually(lambda: all_caught_up(stack.rt.js), "the projector to process every copy")
    assert history.count("ride.driver_assigned") == 1

    processed = await stack.db.read(lambda s: list(s.exec(
        select(ProcessedEvent.event_id).where(ProcessedEvent.consumer == "ride-projector"))))
    event_ids = {e.id for _, e in await ride_history(stack.rt.js, ride_id)}
    assert sorted(processed) == sorted(event_ids)  # each distinct event recorded once
    handle = stack.temporal.get_workflow_handle(f"ride-{ride_id}")
    signals = [e for e in (await handle.fetch_history()).events
               if e.HasField("workflow_execution_signaled_event_attributes")]
    assert len(signals) == 3  # delivered three times, applied once (ids de-duplicated)
    assert await handle.query("status") == RideStatus.DRIVER_ASSIGNED


async def test_each_ride_is_applied_in_order_by_two_processes_sharing_the_group(
    settings: Settings, own_nats: RestartableNats
) -> None:
    """Two consumer connections (as two processes would) share one ordered group; each
    handler dawdles a random while. Every ride's events are still seen in publish order,
    and both members do part of the work."""
    seen: dict[str, list[int]] = defaultdict(list)
    by_member: dict[int, int] = defaultdict(int)

    def handler(member: int):  # type: ignore[no-untyped-def]
        async def handle(event: CloudEvent, msg: Msg) -> None:
            await asyncio.sleep(random.uniform(0, 0.01))
            seen[event.subject].append(event.data["n"])
            by_member[member] += 1

        return handle

    publisher = await nats.connect(own_nats.url)
    members = [await nats.connect(own_nats.url) for _ in range(2)]
    js = publisher.jetstream()
    await ensure_streams(js)
    stop = asyncio.Event()
    runners = [
        asyncio.create_task(ConsumerRunner(
            m.jetstream(),
            ConsumerSpec(name="order-check", stream="RIDES", prefix="rides",
                         handler=handler(i), types=frozenset({"ride.trip_ended"})),
        ).run(stop))
        for i, m in enumerate(members)
    ]
    rides = [uuid.uuid4().hex for _ in range(24)]
    per_ride = 12
    try:
        for n in range(per_ride):
            for ride in random.sample(rides, len(rides)):
                await js.publish(f"rides.{ride}.trip_ended", raw_event(
                    "ride.trip_ended", ride,
                    {"ride_id": ride, "driver_id": "d", "distance_m": 1, "duration_s": n} |
                    {"n": n}))

        async def done() -> bool:
            return sum(len(v) for v in seen.values()) == len(rides) * per_ride

        await eventually(done, "every event to be handled", timeout=60)
    finally:
        stop.set()
        await asyncio.gather(*runners)
        for c in (publisher, *members):
            await c.close()
    for ride in rides:
        assert seen[ride] == list(range(per_ride)), (ride, seen[ride])
    assert all(by_member[i] > 0 for i in range(2)), dict(by_member)


async def test_consumers_resume_after_a_nats_restart(
    settings: Settings, own_nats: RestartableNats
) -> None:
    # an offer that outlives the restart: the acceptance must not race the offer's timer
    settings = settings.model_copy(update={"nats_url": own_nats.url, "offer_timeout_s": 60})
    async with running_stack(settings) as stack:
        await driver_online(stack, "d1", {"lat": 40.7505, "lng": -73.9905})
        r = await stack.call("POST", "/v1/rides", "rider", "r1", want=202,
                             json={"pickup": PICKUP, "dropoff": DROPOFF})
        ride_id = r.json()["ride_id"]
        await wait_offer(stack, "d1", ride_id)

        await own_nats.restart()

        await stack.call("POST", f"/v1/rides/{ride_id}/accept", "driver", "d1", want=202)
        await stack.wait_status(ride_id, "r1", RideStatus.DRIVER_ASSIGNED, timeout=30)
        for action, status in (("arrive", "driver_arrived"), ("start", "in_progress")):
            await stack.call("POST", f"/v1/rides/{ride_id}/{action}", "driver", "d1", want=202)
            await stack.wait_status(ride_id, "r1", status)
        await stack.call("POST", f"/v1/rides/{ride_id}/complete", "driver", "d1", want=202,
                         json={"distance_m": 1200, "duration_s": 300})
        await stack.wait_status(ride_id, "r1", RideStatus.COMPLETED)
        types = [e.type for _, e in await ride_history(stack.rt.js, ride_id)]
        assert types.count("ride.completed") == 1 and types[0] == "ride.requested"


async def test_redrive_publishes_a_dead_letter_again(stack: Stack) -> None:
    await stack.rt.js.publish("rides.poison2.driver_arrived", b"[]",
                              headers={"Nats-Msg-Id": "poison-2"})

    async def letters() -> list:
        found = await list_dead_letters(stack.rt.js)
        return found if len(found) == 3 else []

    first = (await eventually(letters, "the dead letters"))[0]
    before = (await stack.rt.js.stream_info("RIDES")).state.messages
    await redrive(stack.rt.js, first.id)
    after = (await stack.rt.js.stream_info("RIDES")).state.messages
    assert after == before + 1
    remaining = await list_dead_letters(stack.rt.js)
    assert first.id not in [d.id for d in remaining]


async def test_an_event_whose_publish_failed_holds_back_later_events_of_its_ride(
    settings: Settings, own_nats: RestartableNats
) -> None:
    """Per-ride order across an outage: the first event's publish fails, the broker
    returns, and the ride's next event still does not overtake it."""
    settings = settings.model_copy(update={"nats_url": own_nats.url})
    async with running_stack(settings, components=("api",)) as stack:
        own_nats.stop()
        await eventually(lambda: _false_when(stack.rt.nc.is_connected), "the client to notice")
        r = await stack.call("POST", "/v1/rides", "rider", "r1", want=202,
                             json={"pickup": PICKUP, "dropoff": DROPOFF})
        ride_id = r.json()["ride_id"]
        await own_nats.restart()
        await eventually(lambda: _true(stack.rt.nc.is_connected), "the client to reconnect")
        await stack.call("POST", f"/v1/rides/{ride_id}/cancel", "rider", "r1", want=202)
        assert await unpublished(stack) == 2  # the cancel waits behind the request
        assert await stack.rt.outbox.relay_once(min_age_s=0) == 2
        types = [e.type for _, e in await ride_history(stack.rt.js, ride_id)]
        assert types == ["ride.requested", "ride.cancellation_requested"]


async def _true(value: bool) -> bool:
    return value


async def test_two_relays_publish_a_backlog_exactly_once(stack: Stack) -> None:
    """Relays racing over the same unpublished rows (on PostgreSQL too): every event
    reaches the stream once, in order per ride, and every row ends marked."""
    rides = [uuid.uuid4().hex for _ in range(10)]

    def backlog(session) -> None:  # type: ignore[no-untyped-def]
        stale = datetime.now(UTC).replace(year=2025)
        for n in range(5):
            for ride in rides:
                event = CloudEvent.model_validate_json(raw_event(
                    "ride.trip_ended", ride,
                    {"ride_id": ride, "driver_id": "d", "distance_m": n, "duration_s": n}))
                session.add(OutboxEvent(event_id=event.id, aggregate_id=ride,
                                        subject=event.nats_subject, body=event.to_json().decode(),
                                        created_at=stale))

    await stack.db.write(backlog)
    relays = [Outbox(stack.db, stack.rt.js, stack.rt.nc) for _ in range(2)]
    published = await asyncio.gather(*(r.relay_once() for r in relays))
    assert sum(published) >= 50
    assert await unpublished(stack) == 0
    for ride in rides:
        seen = [e.data["distance_m"] for _, e in await ride_history(stack.rt.js, ride)]
        assert seen == [0, 1, 2, 3, 4], (ride, seen)
