"""Consumers under infrastructure failures, against a real nats-server: a transient
failure is retried in place for as long as it lasts, in order, and never dead-lettered;
the consumer reports itself blocked meanwhile; a DLQ publish failing during a NATS
outage does not end the consumer, and the message is handled once NATS is back; nor does
NATS not answering while the consumer creates its durables."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import nats
import pytest
import sqlalchemy.exc
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from temporalio.service import RPCError, RPCStatusCode

from events.consumer import ConsumerRunner, ConsumerSpec
from events.dlq import list_dead_letters
from events.envelope import CloudEvent
from events.failures import PermanentError, is_transient
from events.health import ConsumerHealth
from events.streams import ensure_streams
from tests.support.servers import RestartableNats
from tests.support.stack import eventually


def _event(ride_id: str, name: str) -> bytes:
    return json.dumps({
        "specversion": "1.0", "id": str(uuid.uuid4()), "source": "test",
        "type": f"ride.{name}", "subject": ride_id, "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json", "dataversion": 1,
        "data": {"ride_id": ride_id, "driver_id": "d1"},
    }).encode()


@pytest.fixture
async def nc(own_nats: RestartableNats) -> AsyncIterator[NATS]:
    client = await nats.connect(own_nats.url, max_reconnect_attempts=-1,
                                reconnect_time_wait=0.2)
    await ensure_streams(client.jetstream())
    yield client
    await client.close()


def test_failures_are_told_apart() -> None:
    assert is_transient(RPCError("no frontend", RPCStatusCode.UNAVAILABLE, b""))
    assert is_transient(RPCError("slow", RPCStatusCode.DEADLINE_EXCEEDED, b""))
    assert not is_transient(RPCError("bad", RPCStatusCode.INVALID_ARGUMENT, b""))
    locked = sqlalchemy.exc.OperationalError("UPDATE rides", {}, Exception("database is locked"))
    assert is_transient(locked)
    assert not is_transient(sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("dup")))
    assert is_transient(ConnectionRefusedError())
    assert not is_transient(ValueError("a bug"))
    assert not is_transient(PermanentError("never"))
    try:
        try:
            raise ConnectionResetError("peer")
        except ConnectionResetError as e:
            raise RuntimeError("wrapped") from e
    except RuntimeError as wrapped:
        assert is_transient(wrapped)


async def test_a_transient_failure_is_retried_in_place_never_dead_lettered(nc: NATS) -> None:
    js = nc.jetstream()
    ride_id = uuid.uuid4().hex
    handled: list[str] = []
    tries: dict[str, int] = {}
    health = ConsumerHealth()
    seen_blocked: list[str] = []

    async def handler(event: CloudEvent, msg: Msg) -> None:
        tries[event.type] = tries.get(event.type, 0) + 1
        if event.type == "ride.driver_arrived" and tries[event.type] <= 3:
            seen_blocked.extend(health.blocked())
            raise RPCError("Temporal is down", RPCStatusCode.UNAVAILABLE, b"")
        handled.append(event.type)

    # one delivery allowed: a transient failure must not count as one
    spec = ConsumerSpec(name="outage-test", stream="RIDES", prefix="rides", handler=handler,
                        max_deliver=1)
    stop = asyncio.Event()
    runner = asyncio.create_task(ConsumerRunner(js, spec, health).run(stop))
    try:
        await js.publish(f"rides.{ride_id}.driver_arrived", _event(ride_id, "driver_arrived"))
        await js.publish(f"rides.{ride_id}.trip_started", _event(ride_id, "trip_started"))

        async def both() -> bool:
            return len(handled) == 2

        await eventually(both, "both events to be handled", timeout=30)
        assert handled == ["ride.driver_arrived", "ride.trip_started"]  # in order
        assert tries["ride.driver_arrived"] == 4
        assert any(d.startswith("outage-test-p") for d in seen_blocked)  # reported blocked
        assert health.blocked() == {}  # and unblocked once it cleared
        assert [d for d in await list_dead_letters(js) if d.consumer == "outage-test"] == []
        assert not runner.done()
    finally:
        stop.set()
        await runner


async def test_a_failing_dlq_publish_does_not_end_the_consumer(
        nc: NATS, own_nats: RestartableNats) -> None:
    js = nc.jetstream()
    ride_id = uuid.uuid4().hex
    calls: list[str] = []
    nats_stopped = asyncio.Event()

    async def handler(event: CloudEvent, msg: Msg) -> None:
        calls.append(event.type)
        if event.type == "ride.driver_arrived":
            if not nats_stopped.is_set():
                own_nats.stop()  # the DLQ publish that follows cannot succeed
                nats_stopped.set()
            raise PermanentError("this report can never be applied")

    spec = ConsumerSpec(name="dlq-outage-test", stream="RIDES", prefix="rides",
                        handler=handler)
    stop = asyncio.Event()
    runner = asyncio.create_task(ConsumerRunner(js, spec).run(stop))
    try:
        await js.publish(f"rides.{ride_id}.driver_arrived", _event(ride_id, "driver_arrived"))
        await asyncio.wait_for(nats_stopped.wait(), 20)
        await asyncio.sleep(3)  # the DLQ publish times out meanwhile
        assert not runner.done(), runner
        own_nats.start()
        await own_nats.wait_ready()

        async def dead() -> list:
            return [d for d in await list_dead_letters(js) if d.consumer == "dlq-outage-test"]

        [letter] = await eventually(dead, "the poison message in the DLQ", timeout=60)
        assert "never be applied" in letter.error
        # and the consumer goes on with the ride's next event
        await js.publish(f"rides.{ride_id}.trip_started", _event(ride_id, "trip_started"))

        async def next_handled() -> bool:
            return "ride.trip_started" in calls

        await eventually(next_handled, "the next event to be handled", timeout=30)
        assert not runner.done()
    finally:
        stop.set()
        await runner


async def test_a_consumer_started_while_nats_is_frozen_waits_then_runs(
        nc: NATS, own_nats: RestartableNats) -> None:
    # a JetStream request that gets no answer in time (nats-server frozen: the connection
    # still looks up) must not end a consumer that is creating its durables
    js = nc.jetstream(timeout=0.5)
    ride_id = uuid.uuid4().hex
    handled: list[str] = []

    async def handler(event: CloudEvent, msg: Msg) -> None:
        handled.append(event.type)

    spec = ConsumerSpec(name="frozen-start-test", stream="RIDES", prefix="rides",
                        handler=handler)
    stop = asyncio.Event()
    health = ConsumerHealth()
    assert own_nats.server.proc is not None
    pid = own_nats.server.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        runner = asyncio.create_task(ConsumerRunner(js, spec, health).run(stop))
        await asyncio.sleep(2)  # a few of its requests time out meanwhile
        assert not runner.done(), runner
        # blocked meanwhile, as /readyz and the metrics tell
        assert "TimeoutError" in health.blocked()["frozen-start-test"].reason
        assert health.by_group()["frozen-start-test"] > 0
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        await js.publish(f"rides.{ride_id}.trip_started", _event(ride_id, "trip_started"))

        async def was_handled() -> bool:
            return handled == ["ride.trip_started"]

        await eventually(was_handled, "the event to be handled once NATS answers", timeout=30)
        assert not runner.done() and health.blocked() == {}
    finally:
        stop.set()
        await runner
