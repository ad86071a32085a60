"""The worker is killed (SIGKILL) in the middle of a ride and a new one is started: the
ride completes, and the rider is charged once.

The workers are real ``ridehail worker`` processes against the session's Temporal and
NATS and the test's database; the API, consumers and relay run in the test process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from temporalio.api.enums.v1 import EventType

from domain.payments import hold_cents
from domain.status import RideStatus
from infra.config import Settings
from tests.support.rides import (
    BEFORE_MATCHING,
    NEAR,
    TRIP,
    TRIP_EVENTS,
    accept,
    answer,
    driver_online,
    event_types,
    final_fare,
    ledger,
    quoted_fare,
    request_ride,
    search_attributes,
    wait_driver_free,
    workflow,
)
from tests.support.stack import running_stack

RIDEHAIL = str(Path(sys.executable).parent / "ridehail")


@contextmanager
def worker_process(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``ridehail worker`` as its own process; killed on the way out if still running."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIDEHAIL_")}
    env.update(
        RIDEHAIL_DATA_DIR=str(settings.data_dir),
        RIDEHAIL_DATABASE_URL=settings.db_url,
        RIDEHAIL_NATS_URL=settings.nats_url,
        RIDEHAIL_TEMPORAL_ADDRESS=settings.temporal_address,
        RIDEHAIL_TEMPORAL_NAMESPACE=settings.temporal_namespace,
        RIDEHAIL_JWT_SECRET=settings.require_jwt_secret(),
        PYTHONUNBUFFERED="1",
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [RIDEHAIL, "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


async def workflow_task_workers(settings: Settings, ride_id: str, temporal) -> set[str]:  # type: ignore[no-untyped-def]
    """The identities of the workers that completed the ride's workflow tasks."""
    seen: set[str] = set()
    async for e in workflow(temporal, ride_id).fetch_history_events():
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            seen.add(e.workflow_task_completed_event_attributes.identity)
    return seen


async def test_worker_killed_mid_ride_and_restarted(settings: Settings, tmp_path: Path) -> None:
    async with running_stack(settings, components=("consumers", "relay", "api")) as stack:
        await driver_online(stack, "d1", NEAR)
        with worker_process(settings, tmp_path / "worker-1.log") as first:
            ride_id = await request_ride(stack)
            await accept(stack, ride_id, "d1")
            first.send_signal(signal.SIGKILL)  # no graceful shutdown: a crash
            first.wait(10)

        # the trip goes on while no worker runs; the saga hears of it when one is back
        for verb, status in (("arrive", "driver_arrived"), ("start", "in_progress")):
            await answer(stack, ride_id, "d1", verb)
            await stack.wait_status(ride_id, "r1", status)
        await stack.call(
            "POST", f"/v1/rides/{ride_id}/complete", "driver", "d1", want=202, json=TRIP
        )

        with worker_process(settings, tmp_path / "worker-2.log"):
            done = await stack.wait_status(ride_id, "r1", RideStatus.COMPLETED, timeout=60)
            # the read model says completed when the last step commits; the workflow
            # closes when that workflow task reaches the server: keep the worker till then
            async with asyncio.timeout(60):
                await workflow(stack.temporal, ride_id).result()

        assert done["fare"]["final"] == f"{final_fare() / 100:.2f}"
        # charged once: one hold, one capture, each once on the stream too
        assert ledger(stack, ride_id) == [
            ("authorize", hold_cents(quoted_fare())),
            ("capture", final_fare()),
        ]
        assert await event_types(stack, ride_id) == [
            *BEFORE_MATCHING,
            "ride.driver_offered",
            "ride.driver_accepted",
            "ride.driver_assigned",
            *TRIP_EVENTS,
        ]
        await wait_driver_free(stack, "d1")
        assert await search_attributes(stack.temporal, ride_id) == {
            "RideStatus": RideStatus.COMPLETED,
            "RiderId": "r1",
            "DriverId": "d1",
        }
        # two worker processes ran the ride's workflow, one after the other
        assert len(await workflow_task_workers(settings, ride_id, stack.temporal)) == 2
