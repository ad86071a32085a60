"""Writes never hang on a stalled broker: with nats-server frozen (SIGSTOP, so the
connection still looks up), the API answers once its transaction commits, after a short
bounded wait for the PubAck, and the relay publishes the events once NATS resumes."""

from __future__ import annotations

import os
import signal
import time

from sqlmodel import col, select

from infra.config import Settings
from store.tables import OutboxEvent
from tests.support.servers import RestartableNats
from tests.support.stack import eventually, running_stack

PICKUP = {"lat": 40.75, "lng": -73.99}
DROPOFF = {"lat": 40.76, "lng": -73.97}
# A hang would be the whole publish timeout (5 s) or more; the bound after commit is 0.5 s.
NO_HANG_S = 3.0


async def test_requests_are_answered_promptly_while_nats_is_frozen(
        settings: Settings, own_nats: RestartableNats) -> None:
    settings = settings.model_copy(update={"nats_url": own_nats.url})
    async with running_stack(settings, components=("api", "relay")) as stack:
        assert own_nats.server.proc is not None
        pid = own_nats.server.proc.pid
        os.kill(pid, signal.SIGSTOP)
        took: list[float] = []
        rides: list[str] = []
        try:
            assert stack.rt.nc.is_connected  # the stall is invisible to the client
            for i in range(6):
                t0 = time.perf_counter()
                r = await stack.call("POST", "/v1/rides", "rider", f"frozen-{i}", want=202,
                                     json={"pickup": PICKUP, "dropoff": DROPOFF})
                took.append(time.perf_counter() - t0)
                rides.append(r.json()["ride_id"])
        finally:
            os.kill(pid, signal.SIGCONT)
        assert max(took) < NO_HANG_S, took

        async def all_published() -> bool:
            rows = await stack.db.read(lambda s: list(s.exec(
                select(OutboxEvent.aggregate_id)
                .where(col(OutboxEvent.published_at).is_(None)))))
            return not rows

        await eventually(all_published, "the relay to publish the frozen period's events",
                         timeout=60)
        for ride_id in rides:
            events = (await stack.call("GET", f"/v1/rides/{ride_id}/events", "rider",
                                       f"frozen-{rides.index(ride_id)}", want=200)).json()
            assert [e["type"] for e in events["events"]] == ["ride.requested"]
