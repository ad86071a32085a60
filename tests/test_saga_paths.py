"""Every saga path that needs no timer, end to end through the HTTP API against real
Temporal, NATS and the database: the ride's status and failure reason, the ledger, the
drivers, the events in order, and what the workflow history and visibility show.

The helpers here are shared by the other ``test_saga_*`` modules."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlmodel import select
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import PayloadConverter

from activities.payments import hold_cents
from activities.pricing import estimate_trip, fare_cents
from ridehail.geo import Point
from ridehail.tables import Driver, LedgerEntry, Offer
from tests.support.stack import Stack, eventually
from tests.test_ride_e2e import DROPOFF, PICKUP, driver_online, wait_offer
from workflows.types import RideOutcome

FINAL = ("completed", "cancelled", "failed")
NEAR = {"lat": 40.7505, "lng": -73.9905}  # ~70 m from PICKUP
FARTHER = {"lat": 40.7530, "lng": -73.9905}  # ~340 m
FARTHEST = {"lat": 40.7560, "lng": -73.9905}  # ~670 m
TRIP = {"distance_m": 2300, "duration_s": 540}

BEFORE_MATCHING = ["ride.requested", "ride.payment_authorized"]
TRIP_EVENTS = [
    "ride.driver_arrived",
    "ride.trip_started",
    "ride.trip_ended",
    "ride.driver_released",
    "ride.payment_captured",
    "ride.completed",
]


# --- helpers ------------------------------------------------------------------------------


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
    is on the stream: the offer is visible the moment it commits, its event a moment
    later, and a driver's answer sent in between would be published before it."""
    await wait_offer(stack, driver, ride_id)

    async def published() -> bool:
        return any(
            e["type"] == "ride.driver_offered" and e["data"]["driver_id"] == driver
            for e in await events(stack, ride_id, rider)
        )

    await eventually(published, f"ride.driver_offered to {driver} on the stream")


async def accept(stack: Stack, ride_id: str, driver: str, rider: str = "r1") -> None:
    await offered(stack, ride_id, driver, rider)
    await answer(stack, ride_id, driver, "accept")
    assigned = await stack.wait_status(ride_id, rider, "driver_assigned")
    assert assigned["driver_id"] == driver


async def drive(stack: Stack, ride_id: str, driver: str, rider: str = "r1") -> dict[str, Any]:
    """The assigned driver arrives, starts and completes the trip; the completed ride."""
    for verb, status in (("arrive", "driver_arrived"), ("start", "in_progress")):
        await answer(stack, ride_id, driver, verb)
        await stack.wait_status(ride_id, rider, status)
    await stack.call("POST", f"/v1/rides/{ride_id}/complete", "driver", driver, want=202, json=TRIP)
    return await stack.wait_status(ride_id, rider, "completed")


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


# --- the paths ----------------------------------------------------------------------------


async def test_happy_path(stack: Stack) -> None:
    await driver_online(stack, "d1", NEAR)
    ride_id = await request_ride(stack)
    await accept(stack, ride_id, "d1")
    done = await drive(stack, ride_id, "d1")

    assert done["failure_reason"] is None and done["driver_id"] == "d1"
    assert done["fare"]["quoted"] == f"{quoted_fare() / 100:.2f}"
    assert done["fare"]["final"] == f"{final_fare() / 100:.2f}"
    assert done["payment"]["status"] == "captured"
    assert ledger(stack, ride_id) == [
        ("authorize", hold_cents(quoted_fare())),
        ("capture", final_fare()),
    ]
    await wait_driver_free(stack, "d1")
    assert await event_types(stack, ride_id) == [
        *BEFORE_MATCHING,
        "ride.driver_offered",
        "ride.driver_accepted",
        "ride.driver_assigned",
        *TRIP_EVENTS,
    ]

    # visibility: search attributes, the status query, what the history shows
    temporal = stack.temporal
    assert await search_attributes(temporal, ride_id) == {
        "RideStatus": "completed",
        "RiderId": "r1",
        "DriverId": "d1",
    }
    handle = workflow(temporal, ride_id)
    assert await handle.query("status") == "completed"
    outcome = RideOutcome.model_validate(await handle.result())
    assert (outcome.status, outcome.driver_id, outcome.final_fare_cents) == (
        "completed",
        "d1",
        final_fare(),
    )
    desc = await handle.describe()
    assert ride_id in (await desc.static_summary() or "")
    runs = await activity_runs(temporal, ride_id)
    assert [r["name"] for r in runs] == [
        "quote_fare",
        "authorize_payment",
        "reserve_driver",
        "assign_driver",
        "release_driver",  # before the capture since RELEASE_BEFORE_CAPTURE
        "capture_payment",
        "complete_ride",
    ]
    assert all(r["summary"] and r["outcome"] == "completed" for r in runs)
    # the payment gateway's steps are activities; the bookkeeping steps ran as local
    # activities, their summaries on their markers
    assert [r["name"] for r in runs if not r["local"]] == ["authorize_payment", "capture_payment"]
    assert (runs[3]["name"], runs[3]["summary"], runs[3]["local"]) == (
        "assign_driver",
        "assign driver d1 to the ride",
        True,
    )

    # a finished ride cannot be cancelled
    r = await stack.call("POST", f"/v1/rides/{ride_id}/cancel", "rider", "r1", want=409)
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_payment_declined_is_not_retried(stack: Stack) -> None:
    await driver_online(stack, "d1", NEAR)
    ride_id = await request_ride(stack, payment_method="card_declined")
    ride = await ended(stack, ride_id)

    assert (ride["status"], ride["failure_reason"]) == ("failed", "payment_declined")
    assert ride["payment"]["status"] == "declined" and ride["driver_id"] is None
    assert ledger(stack, ride_id) == []
    assert await event_types(stack, ride_id) == [
        "ride.requested",
        "ride.payment_declined",
        "ride.failed",
    ]
    # the driver was never offered the ride
    assert driver_row(stack, "d1") == ("available", None) and offers_to(stack, ride_id) == []

    runs = await activity_runs(stack.temporal, ride_id)
    authorize = [r for r in runs if r["name"] == "authorize_payment"]
    assert authorize == [
        {
            "name": "authorize_payment",
            "summary": authorize[0]["summary"],
            "attempt": 1,
            "outcome": "failed",
            "local": False,
        }
    ]
    # straight to the compensation (nothing to void) and the ending
    assert [(r["name"], r["local"]) for r in runs] == [
        ("quote_fare", True),
        ("authorize_payment", False),
        ("void_payment", False),
        ("fail_ride", True),
    ]
    assert all(r["summary"] for r in runs)
    assert await search_attributes(stack.temporal, ride_id) == {
        "RideStatus": "failed",
        "RiderId": "r1",
    }
    assert await workflow(stack.temporal, ride_id).query("status") == "failed"

    r = await stack.call("POST", f"/v1/rides/{ride_id}/cancel", "rider", "r1", want=409)
    assert r.json()["status"] == 409


async def test_transient_payment_failure_is_retried_then_succeeds(stack: Stack) -> None:
    await driver_online(stack, "d1", NEAR)
    ride_id = await request_ride(stack, payment_method="card_flaky")
    await accept(stack, ride_id, "d1")
    await drive(stack, ride_id, "d1")

    # the sandbox failed the first two attempts; the third went through, once
    runs = await activity_runs(stack.temporal, ride_id)
    authorize = [r for r in runs if r["name"] == "authorize_payment"]
    assert [(r["attempt"], r["outcome"], r["local"]) for r in authorize] == [
        (3, "completed", False)
    ]
    assert ledger(stack, ride_id) == [
        ("authorize", hold_cents(quoted_fare())),
        ("capture", final_fare()),
    ]
    types = await event_types(stack, ride_id)
    assert types.count("ride.payment_authorized") == 1
    assert types[:2] == BEFORE_MATCHING and types[-1] == "ride.completed"


async def test_decline_then_the_next_driver_accepts(stack: Stack) -> None:
    await driver_online(stack, "d1", NEAR)
    await driver_online(stack, "d2", FARTHER)
    ride_id = await request_ride(stack)
    await offered(stack, ride_id, "d1")  # the nearest first
    # what the Temporal UI shows of the waiting workflow
    handle = workflow(stack.temporal, ride_id)

    async def details() -> WorkflowMetadata | None:
        # the offer is visible as soon as it commits; the workflow records it a moment later
        meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        return meta if meta.current_details.startswith("Offered to driver d1") else None

    meta = await eventually(details, "the workflow to show the offer")
    assert meta.current_details == "Offered to driver d1; waiting up to 5 s for an answer"
    assert "status" in [q.name for q in meta.definition.query_definitions]
    assert await handle.query("status") == "matching"
    await answer(stack, ride_id, "d1", "decline")
    await accept(stack, ride_id, "d2")
    await drive(stack, ride_id, "d2")

    assert offers_to(stack, ride_id) == [("d1", "declined"), ("d2", "accepted")]
    assert ledger(stack, ride_id) == [
        ("authorize", hold_cents(quoted_fare())),
        ("capture", final_fare()),
    ]
    await wait_driver_free(stack, "d1")
    await wait_driver_free(stack, "d2")
    assert await event_types(stack, ride_id) == [
        *BEFORE_MATCHING,
        "ride.driver_offered",
        "ride.driver_declined",
        "ride.driver_released",
        "ride.driver_offered",
        "ride.driver_accepted",
        "ride.driver_assigned",
        *TRIP_EVENTS,
    ]
    evs = await events(stack, ride_id)
    offered_to = [e["data"]["driver_id"] for e in evs if e["type"] == "ride.driver_offered"]
    assert offered_to == ["d1", "d2"]
    assert await search_attributes(stack.temporal, ride_id) == {
        "RideStatus": "completed",
        "RiderId": "r1",
        "DriverId": "d2",
    }


async def test_rider_cancels_before_assignment(stack: Stack) -> None:
    await driver_online(stack, "d1", NEAR)
    ride_id = await request_ride(stack)
    await offered(stack, ride_id, "d1")
    assert driver_row(stack, "d1") == ("reserved", ride_id)
    await stack.call(
        "POST",
        f"/v1/rides/{ride_id}/cancel",
        "rider",
        "r1",
        want=202,
        json={"reason": "changed my mind"},
    )
    ride = await ended(stack, ride_id)

    assert ride["status"] == "cancelled" and ride["failure_reason"] is None
    assert ride["payment"]["status"] == "voided" and ride["fare"]["cancellation_fee"] is None
    assert ledger(stack, ride_id) == [
        ("authorize", hold_cents(quoted_fare())),
        ("void", hold_cents(quoted_fare())),
    ]
    await wait_driver_free(stack, "d1")
    assert offers_to(stack, ride_id) == [("d1", "withdrawn")]
    evs = await events(stack, ride_id)
    assert [e["type"] for e in evs] == [
        *BEFORE_MATCHING,
        "ride.driver_offered",
        "ride.cancellation_requested",
        "ride.driver_released",
        "ride.payment_voided",
        "ride.cancelled",
    ]
    assert evs[-3]["data"]["reason"] == "rider_cancelled"
    assert evs[-1]["data"]["by_role"] == "rider" and evs[-1]["data"]["reason"] == (
        "changed my mind"
    )
    assert await search_attributes(stack.temporal, ride_id) == {
        "RideStatus": "cancelled",
        "RiderId": "r1",
    }


async def test_rider_cancels_while_no_driver_is_found(stack: Stack) -> None:
    ride_id = await request_ride(stack)
    await stack.wait_status(ride_id, "r1", "matching")
    await stack.call("POST", f"/v1/rides/{ride_id}/cancel", "rider", "r1", want=202)
    ride = await ended(stack, ride_id)
    assert ride["status"] == "cancelled" and ride["payment"]["status"] == "voided"
    assert [k for k, _ in ledger(stack, ride_id)] == ["authorize", "void"]
    assert await event_types(stack, ride_id) == [
        *BEFORE_MATCHING,
        "ride.cancellation_requested",
        "ride.payment_voided",
        "ride.cancelled",
    ]


async def test_driver_cancels_after_accepting_and_the_ride_is_matched_again(
    stack: Stack,
) -> None:
    await driver_online(stack, "d1", NEAR)
    await driver_online(stack, "d2", FARTHER)
    ride_id = await request_ride(stack)
    await accept(stack, ride_id, "d1")

    async def driver_d1() -> bool:
        attrs = await search_attributes(stack.temporal, ride_id, ended=False)
        return attrs.get("DriverId") == "d1"

    await eventually(driver_d1, "DriverId to be d1")

    await stack.call("POST", f"/v1/rides/{ride_id}/cancel", "driver", "d1", want=202)
    await offered(stack, ride_id, "d2")
    # back to matching: the workflow dropped d1 before it searched again
    assert await search_attributes(stack.temporal, ride_id, ended=False) == {
        "RideStatus": "matching",
        "RiderId": "r1",
    }
    await accept(stack, ride_id, "d2")
    done = await drive(stack, ride_id, "d2")

    assert done["driver_id"] == "d2" and done["fare"]["cancellation_fee"] is None
    assert offers_to(stack, ride_id) == [("d1", "accepted"), ("d2", "accepted")]
    assert ledger(stack, ride_id) == [
        ("authorize", hold_cents(quoted_fare())),
        ("capture", final_fare()),
    ]
    await wait_driver_free(stack, "d1")
    await wait_driver_free(stack, "d2")
    evs = await events(stack, ride_id)
    assert [e["type"] for e in evs] == [
        *BEFORE_MATCHING,
        "ride.driver_offered",
        "ride.driver_accepted",
        "ride.driver_assigned",
        "ride.cancellation_requested",
        "ride.driver_released",
        "ride.driver_offered",
        "ride.driver_accepted",
        "ride.driver_assigned",
        *TRIP_EVENTS,
    ]
    released = [e["data"] for e in evs if e["type"] == "ride.driver_released"]
    assert released[0] == {"ride_id": ride_id, "driver_id": "d1", "reason": "driver_cancelled"}
    assert await search_attributes(stack.temporal, ride_id) == {
        "RideStatus": "completed",
        "RiderId": "r1",
        "DriverId": "d2",
    }


async def test_a_live_quote_keeps_its_price_under_surge(stack: Stack) -> None:
    await driver_online(stack, "d1", FARTHEST)
    q = await stack.call(
        "POST", "/v1/quotes", "rider", "r1", want=201, json={"pickup": PICKUP, "dropoff": DROPOFF}
    )
    quote = q.json()
    assert quote["surge_multiplier"] == 1.0 and quote["fare"] == f"{quoted_fare() / 100:.2f}"

    # demand rises in the zone: five other riders wait, one driver is free
    others = [await request_ride(stack, f"other{i}") for i in range(5)]
    for other in others:
        await stack.wait_status(other, other_rider(others, other), "matching")

    quoted = await request_ride(stack, quote_id=quote["quote_id"])
    fresh = await request_ride(stack, "r2")
    kept = await stack.wait_status(quoted, "r1", "matching")
    repriced = await stack.wait_status(fresh, "r2", "matching")
    assert kept["fare"]["quoted"] == quote["fare"] and kept["fare"]["surge_multiplier"] == 1.0
    assert repriced["fare"]["surge_multiplier"] > 1.0
    assert float(repriced["fare"]["quoted"]) > float(quote["fare"])

    # an unknown quote is refused up front (asked by a rider with no open ride: r1's
    # second request would be refused as such)
    r = await stack.call(
        "POST",
        "/v1/rides",
        "rider",
        "r3",
        want=422,
        json={"pickup": PICKUP, "dropoff": DROPOFF, "quote_id": "nope"},
    )
    assert r.headers["content-type"].startswith("application/problem+json")


def other_rider(others: list[str], ride_id: str) -> str:
    return f"other{others.index(ride_id)}"
