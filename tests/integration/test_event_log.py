"""The database is the record: a ride whose events have left the streams still shows its
whole history, in order, as JSON and as a live stream (resumable by position), and
``ridehail projections rebuild --force`` reproduces it from the event log alone."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from events.lag import all_caught_up
from infra.config import Settings
from ridehail.load.apiclient import SseEvent, sse_events
from ridehail.ops.audit import check_event_log
from store.tables import Driver, OutboxEvent, Ride
from tests.support.rides import (
    NEAR,
    accept,
    drive,
    driver_online,
    events,
    request_ride,
)
from tests.support.stack import Stack, eventually, running_stack

RIDEHAIL = str(Path(sys.executable).parent / "ridehail")


def read_models(session: Session) -> dict[str, Any]:
    rides = {r.ride_id: r.model_dump() for r in session.exec(select(Ride))}
    drivers = {d.driver_id: (d.status, d.ride_id, d.lat, d.lng, d.h3_cell, d.name)
               for d in session.exec(select(Driver))}
    return {"rides": rides, "drivers": drivers}


def logged(stack: Stack, ride_id: str) -> list[tuple[int, str]]:
    """The ride's rows in the outbox: (position, event id), in position order."""
    return stack.query(lambda s: [(r.position or 0, r.event_id) for r in s.exec(
        select(OutboxEvent).where(OutboxEvent.aggregate_id == ride_id)
        .where(col(OutboxEvent.subject).startswith("rides."))
        .order_by(col(OutboxEvent.position)))])


async def sse(stack: Stack, ride_id: str, rider: str, **headers: str) -> list[SseEvent]:
    """The ride's event stream, read until the server ends it (the ride has ended)."""
    out: list[SseEvent] = []
    async with asyncio.timeout(15):
        async with stack.http.stream("GET", f"/v1/rides/{ride_id}/events", headers={
                **stack.auth("rider", rider), "Accept": "text/event-stream",
                **headers}) as r:
            assert r.status_code == 200
            async for event in sse_events(r):
                out.append(event)
    return out


def rebuild_forced(settings: Settings) -> subprocess.CompletedProcess[str]:
    """``ridehail projections rebuild --force --json``, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIDEHAIL_")}
    env.update(RIDEHAIL_DATA_DIR=str(settings.data_dir), RIDEHAIL_DATABASE_URL=settings.db_url,
               RIDEHAIL_NATS_URL=settings.nats_url,
               RIDEHAIL_TEMPORAL_ADDRESS=settings.temporal_address)
    return subprocess.run([RIDEHAIL, "projections", "rebuild", "--force", "--json"], env=env,
                          capture_output=True, text=True, timeout=120)


async def test_a_ride_gone_from_the_streams_keeps_its_history(settings: Settings) -> None:
    async with running_stack(settings) as stack:
        await driver_online(stack, "d1", NEAR)
        completed = await request_ride(stack, "r1")
        await accept(stack, completed, "d1", "r1")
        await drive(stack, completed, "d1", "r1")
        cancelled = await request_ride(stack, "r2", payment_method="card_declined")
        await stack.wait_status(cancelled, "r2", "failed")
        await eventually(lambda: all_caught_up(stack.rt.js), "the consumers to catch up")
        before_json = {ride: await events(stack, ride, rider)
                       for ride, rider in ((completed, "r1"), (cancelled, "r2"))}
        before = stack.query(read_models)

        # the window passes: the streams no longer hold the rides' events
        for stream in ("RIDES", "DRIVERS"):
            await stack.rt.js.purge_stream(stream)
            assert (await stack.rt.js.stream_info(stream)).state.messages == 0

        for ride, rider in ((completed, "r1"), (cancelled, "r2")):
            rows = logged(stack, ride)
            history = await events(stack, ride, rider)
            # the whole history, in the order it was written
            assert history == before_json[ride]
            assert [e["id"] for e in history] == [event_id for _, event_id in rows]
            assert history[0]["type"] == "ride.requested"
            assert history[-1]["type"] in ("ride.completed", "ride.failed")
            # and the live stream: the same, each event's id its position in the log
            streamed = await sse(stack, ride, rider)
            assert [(int(e.id or 0), e.json()["id"]) for e in streamed] == rows
            assert [e.event for e in streamed] == [e["type"] for e in history]
            # resuming after a position gives what followed it, and only that
            middle = rows[len(rows) // 2][0]
            rest = await sse(stack, ride, rider, **{"Last-Event-ID": str(middle)})
            assert [int(e.id or 0) for e in rest] == [p for p, _ in rows if p > middle]
        types = [e["type"] for e in before_json[completed]]
        assert "ride.driver_assigned" in types and "ride.payment_captured" in types

        # the audit reads every ride event from the log, not from the purged stream
        check = await check_event_log(stack.db)
        assert check.ok and check.checked == sum(len(h) for h in before_json.values())

        # projectors are pulling: only --force rebuilds, from the event log alone
        forced = await asyncio.to_thread(rebuild_forced, settings)
        assert forced.returncode == 0, forced.stderr
        result = json.loads(forced.stdout)
        assert result["rides"] == 2 and result["skipped_invalid"] == 0
        assert result["ride_events"] == check.checked and result["driver_events"] >= 1
        after = stack.query(read_models)
    assert after == before
