"""Helpers for tests that drive rides through the running stack: places on the map,
drivers going online, requesting and steering rides, and reading back what happened —
the ride, its events, the ledger, the drivers, the workflow's history and visibility."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlmodel import select
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.testservice.v1 import LockTimeSkippingRequest, UnlockTimeSkippingRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import PayloadConverter
from temporalio.testing import WorkflowEnvironment

from domain.geo import Point
from domain.pricing import estimate_trip, fare_cents
from domain.status import FINAL, RideStatus
from store.tables import Driver, LedgerEntry, Offer
from tests.support.ridestream import ride_history
from tests.support.stack import Stack, eventually
from workflows.types import RideOutcome

PICKUP = {"lat": 40.75, "lng": -73.99}


DROPOFF = {"lat": 40.76, "lng": -73.97}


async def driver_online(stack: Stack, driver: str, at: dict[str, float]) -> None:
    await stack.call("PUT", "/v1/drivers/me", "driver", driver, want=200, json={
        "name": f"Driver {driver}", "vehicle": {"make": "Kia", "model": "Niro", "plate": driver}})
    await stack.call("POST", "/v1/drivers/me/online", "driver", driver, want=200, json=at)

    async def available() -> bool:
        me = await stack.call("GET", "/v1/drivers/me", "driver", driver, want=200)
        return me.json()["status"] == "available"

    await eventually(available, f"driver {driver} to be available")


async def wait_offer(stack: Stack, driver: str, ride_id: str) -> dict:
    async def offered() -> dict | None:
        offers = (await stack.call("GET", "/v1/drivers/me/offers", "driver", driver,
                                   want=200)).json()
        return next((o for o in offers if o["ride_id"] == ride_id), None)

    return await eventually(offered, f"an offer of {ride_id} to {driver}")


NEAR = {"lat": 40.7505, "lng": -73.9905}  # ~70 m from PICKUP


FARTHER = {"lat": 40.7530, "lng": -73.9905}  # ~340 m


FARTHEST = {"lat": 40.7560, "lng": -73.9905}  # ~670 m


# The driver's report of the test trip: a distance the route estimate (2624 m) agrees
# with, and a duration the seconds between the trip's start and end events agree with
# (within the meter's tolerance, domain.meter), so it is charged as reported.
TRIP = {"distance_m": 2300, "duration_s": 30}


BEFORE_MATCHING = ["ride.requested", "ride.payment_authorized"]


TRIP_EVENTS = [
    "ride.driver_arrived",
    "ride.trip_started",
    "ride.trip_ended",
    "ride.driver_released",
    "ride.payment_captured",
    "ride.completed",
]


async def request_ride(stack: Stack, rider: str = "r1", **body: Any) -> str:
    r = await stack.call(
        "POST",
        "/v1/rides",
        "rider",
        rider,
        want=202,
        json={"pickup": PICKUP, "dropoff": DROPOFF, **body},
    )
    return str(r.json()["ride_id"])


async def answer(stack: Stack, ride_id: str, driver: str, verb: str) -> None:
    await stack.call("POST", f"/v1/rides/{ride_id}/{verb}", "driver", driver, want=202)


async def offered(stack: Stack, ride_id: str, driver: str, rider: str = "r1") -> None:
    """Wait until ``driver`` holds an open offer of the ride *and* its ride.driver_offered
    is on the stream: the offer is visible the moment it commits (and its event in the
    ride's history, the event log), its message a moment later, and a driver's answer
    sent in between would be published before it."""
    await wait_offer(stack, driver, ride_id)

    async def published() -> bool:
        return any(
            e.type == "ride.driver_offered" and e.data["driver_id"] == driver
            for _, e in await ride_history(stack.rt.js, ride_id)
        )

    await eventually(published, f"ride.driver_offered to {driver} on the stream")


async def accept(stack: Stack, ride_id: str, driver: str, rider: str = "r1") -> None:
    await offered(stack, ride_id, driver, rider)
    await answer(stack, ride_id, driver, "accept")
    assigned = await stack.wait_status(ride_id, rider, RideStatus.DRIVER_ASSIGNED)
    assert assigned["driver_id"] == driver


async def drive(stack: Stack, ride_id: str, driver: str, rider: str = "r1") -> dict[str, Any]:
    """The assigned driver arrives, starts and completes the trip; the completed ride."""
    for verb, status in (("arrive", "driver_arrived"), ("start", "in_progress")):
        await answer(stack, ride_id, driver, verb)
        await stack.wait_status(ride_id, rider, status)
    await stack.call("POST", f"/v1/rides/{ride_id}/complete", "driver", driver, want=202, json=TRIP)
    return await stack.wait_status(ride_id, rider, RideStatus.COMPLETED)


async def ended(stack: Stack, ride_id: str, rider: str = "r1") -> dict[str, Any]:
    """The ride once the read model shows it ended (every event of it is then stored:
    the ending is the saga's last event)."""

    async def check() -> dict[str, Any] | None:
        ride = await stack.ride(ride_id, rider)
        return ride if ride["status"] in FINAL else None

    return await eventually(check, f"ride {ride_id} to end")


async def event_types(stack: Stack, ride_id: str, rider: str = "r1") -> list[str]:
    r = await stack.call("GET", f"/v1/rides/{ride_id}/events", "rider", rider, want=200)
    return [e["type"] for e in r.json()["events"]]


async def events(stack: Stack, ride_id: str, rider: str = "r1") -> list[dict[str, Any]]:
    r = await stack.call("GET", f"/v1/rides/{ride_id}/events", "rider", rider, want=200)
    return list(r.json()["events"])


def ledger(stack: Stack, ride_id: str) -> list[tuple[str, int]]:
    rows = stack.query(
        lambda s: list(
            s.exec(
                select(LedgerEntry).where(LedgerEntry.ride_id == ride_id).order_by(LedgerEntry.id)
            )
        )
    )  # type: ignore[arg-type]
    assert all(e.idempotency_key.startswith(f"ride-{ride_id}:") for e in rows)
    return [(e.kind, e.amount_cents) for e in rows]


def driver_row(stack: Stack, driver: str) -> tuple[str, str | None]:
    d = stack.query(lambda s: s.get(Driver, driver))
    assert d is not None
    return d.status, d.ride_id


def offers_to(stack: Stack, ride_id: str) -> list[tuple[str, str]]:
    rows = stack.query(
        lambda s: list(
            s.exec(select(Offer).where(Offer.ride_id == ride_id).order_by(Offer.created_at))
        )
    )
    return [(o.driver_id, o.status) for o in rows]


async def wait_driver_free(stack: Stack, driver: str) -> None:
    async def free() -> bool:
        return driver_row(stack, driver) == ("available", None)

    await eventually(free, f"driver {driver} to be available")


def workflow(temporal: Client, ride_id: str) -> WorkflowHandle[Any, Any]:
    return temporal.get_workflow_handle(f"ride-{ride_id}")


async def search_attributes(temporal: Client, ride_id: str, ended: bool = True) -> dict[str, Any]:
    """The ride's own search attributes (the server adds others, e.g. BuildIds) — once
    its workflow has closed, unless ``ended`` is False. (The read model can show a ride
    ended a moment before the workflow records its last status: it records the ending,
    then upserts the status.)"""
    handle = workflow(temporal, ride_id)
    if ended:
        await handle.result()
    desc = await handle.describe()
    return {
        pair.key.name: pair.value
        for pair in desc.typed_search_attributes
        if pair.key.name in ("RideStatus", "RiderId", "DriverId")
    }


async def history_types(temporal: Client, ride_id: str) -> list[int]:
    """The event types of the ride workflow's history so far."""
    history = await workflow(temporal, ride_id).fetch_history()
    return [e.event_type for e in history.events]


async def cancel_between_searches(stack: Stack, ride_id: str, rider: str = "r1") -> None:
    """Cancel a ride with no driver nearby on the time-skipping test server, at a moment
    that cannot strand its workflow, and return once the workflow has taken the request.

    The test server refuses a workflow task's completion that cancels a timer which fired
    while the task was with the worker ("invalid history builder state for action",
    temporalio/sdk-java#3088), and never sends the task again: the run hangs. Between two
    searches the workflow waits on a 3 s timer in real time (time skipping is locked),
    and the cancellation cancels it. So the request goes in just after a pause has begun
    (the history's last event is its TimerStarted), and the caller unlocks time skipping
    only after the workflow task that took the signal has completed."""
    started = EventType.EVENT_TYPE_TIMER_STARTED

    async def pausing() -> bool:
        return (await history_types(stack.temporal, ride_id))[-1] == started

    await eventually(pausing, "the workflow to pause between driver searches")
    await stack.call("POST", f"/v1/rides/{ride_id}/cancel", "rider", rider, want=202)

    async def taken() -> bool:
        # after the pause began: the signal, then a completed workflow task
        wanted = [EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
                  EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]
        types = await history_types(stack.temporal, ride_id)
        for event_type in types[len(types) - types[::-1].index(started):]:
            if wanted and event_type == wanted[0]:
                wanted.pop(0)
        return not wanted

    await eventually(taken, "the workflow to take the cancellation")


# How the SDK records a local activity in the history: one marker, whose details hold the
# activity's type and final attempt ("data") and its result; a failure is the marker's own.
LOCAL_ACTIVITY_MARKER = "core_local_activity"


async def activity_runs(temporal: Client, ride_id: str) -> list[dict[str, Any]]:
    """Each step of the ride's workflow in history order, once the workflow has closed
    (see ``step_runs``)."""
    handle = workflow(temporal, ride_id)
    await handle.result()
    history = await handle.fetch_history()
    return step_runs(history.events, temporal.data_converter.payload_converter)


def step_runs(
    events: Iterable[HistoryEvent],
    converter: PayloadConverter = pydantic_data_converter.payload_converter,
) -> list[dict[str, Any]]:
    """Each step in a workflow history, in order — an activity (scheduled, started,
    completed or failed) or a local activity (one marker): its name, its summary, the
    attempt that finished it, how it finished, and whether it ran as a local activity."""

    def summary(e: HistoryEvent) -> str | None:
        if not e.user_metadata.HasField("summary"):
            return None
        return str(converter.from_payload(e.user_metadata.summary, str))

    runs: dict[int, dict[str, Any]] = {}
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            marker = e.marker_recorded_event_attributes
            if marker.marker_name != LOCAL_ACTIVITY_MARKER:
                continue  # a patch marker
            data = converter.from_payload(marker.details["data"].payloads[0], dict[str, Any])
            runs[e.event_id] = {
                "name": data["activity_type"],
                "summary": summary(e),
                "attempt": data["attempt"],
                "outcome": "failed" if marker.HasField("failure") else "completed",
                "local": True,
            }
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            runs[e.event_id] = {
                "name": e.activity_task_scheduled_event_attributes.activity_type.name,
                "summary": summary(e),
                "attempt": None,
                "outcome": None,
                "local": False,
            }
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            a = e.activity_task_started_event_attributes
            runs[a.scheduled_event_id]["attempt"] = a.attempt
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            runs[e.activity_task_completed_event_attributes.scheduled_event_id]["outcome"] = (
                "completed"
            )
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            runs[e.activity_task_failed_event_attributes.scheduled_event_id]["outcome"] = "failed"
    return list(runs.values())


def quoted_fare() -> int:
    """The fare of the test trip with no surge (one driver, one request)."""
    trip = estimate_trip(Point(**PICKUP), Point(**DROPOFF))
    return fare_cents(trip.distance_m, trip.duration_s, 1.0)


def final_fare() -> int:
    return fare_cents(TRIP["distance_m"], TRIP["duration_s"], 1.0)


# How long a time-skipping test waits for a workflow's result on a loaded machine.
RESULT_PATIENCE_S = 240.0


async def outcome_skipping_time(env: WorkflowEnvironment, ride_id: str) -> RideOutcome:
    """The ride workflow's outcome, letting the test server skip every timer until then.
    (Only the handles ``start_workflow`` returns do that by themselves; the trigger
    consumer started this workflow.)"""
    test_service = env.client.test_service
    await test_service.unlock_time_skipping(UnlockTimeSkippingRequest())
    try:
        deadline = time.monotonic() + RESULT_PATIENCE_S
        while True:
            try:
                return RideOutcome.model_validate(await workflow(env.client, ride_id).result())
            except RuntimeError as e:
                # the test server's long poll for the history ends empty when the workflow
                # has not closed within it, as on a loaded machine ("No completion event
                # found"): ask again, for a while
                if "No completion event found" not in str(e) or time.monotonic() > deadline:
                    raise
    finally:
        await test_service.lock_time_skipping(LockTimeSkippingRequest())


def raw_event(event_type: str, subject: str, data: dict, version: int = 1,
              event_id: str | None = None) -> bytes:
    return json.dumps({
        "specversion": "1.0", "id": event_id or str(uuid.uuid4()), "source": "test",
        "type": event_type, "subject": subject, "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json", "dataversion": version, "data": data,
    }).encode()
