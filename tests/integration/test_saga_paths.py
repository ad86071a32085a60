"""Every saga path that needs no timer, end to end through the HTTP API against real
Temporal, NATS and the database: the ride's status and failure reason, the ledger, the
drivers, the events in order, and what the workflow history and visibility show.

The helpers here are shared by the other ``test_saga_*`` modules."""

from __future__ import annotations

from temporalio.api.sdk.v1 import WorkflowMetadata

from domain.payments import hold_cents
from domain.status import RideStatus
from tests.support.rides import (
    BEFORE_MATCHING,
    FARTHER,
    NEAR,
    TRIP_EVENTS,
    accept,
    activity_runs,
    answer,
    drive,
    driver_online,
    driver_row,
    ended,
    event_types,
    events,
    final_fare,
    ledger,
    offered,
    offers_to,
    quoted_fare,
    request_ride,
    search_attributes,
    wait_driver_free,
    workflow,
)
from tests.support.stack import Stack, eventually
from workflows.contract import Step
from workflows.types import RideOutcome

# --- helpers ------------------------------------------------------------------------------


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
        "RideStatus": RideStatus.COMPLETED,
        "RiderId": "r1",
        "DriverId": "d1",
    }
    handle = workflow(temporal, ride_id)
    assert await handle.query("status") == RideStatus.COMPLETED
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
        Step.QUOTE_FARE,
        Step.AUTHORIZE_PAYMENT,
        Step.RESERVE_DRIVER,
        Step.ASSIGN_DRIVER,
        Step.RELEASE_DRIVER,  # before the capture since RELEASE_BEFORE_CAPTURE
        Step.CAPTURE_PAYMENT,
        Step.COMPLETE_RIDE,
    ]
    assert all(r["summary"] and r["outcome"] == "completed" for r in runs)
    # the payment gateway's steps are activities; the bookkeeping steps ran as local
    # activities, their summaries on their markers
    assert [r["name"] for r in runs if not r["local"]] == [
        Step.AUTHORIZE_PAYMENT,
        Step.CAPTURE_PAYMENT,
    ]
    assert (runs[3]["name"], runs[3]["summary"], runs[3]["local"]) == (
        Step.ASSIGN_DRIVER,
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

    assert (ride["status"], ride["failure_reason"]) == (RideStatus.FAILED, "payment_declined")
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
    authorize = [r for r in runs if r["name"] == Step.AUTHORIZE_PAYMENT]
    assert authorize == [
        {
            "name": Step.AUTHORIZE_PAYMENT,
            "summary": authorize[0]["summary"],
            "attempt": 1,
            "outcome": "failed",
            "local": False,
        }
    ]
    # straight to the compensation (nothing to void) and the ending
    assert [(r["name"], r["local"]) for r in runs] == [
        (Step.QUOTE_FARE, True),
        (Step.AUTHORIZE_PAYMENT, False),
        (Step.VOID_PAYMENT, False),
        (Step.FAIL_RIDE, True),
    ]
    assert all(r["summary"] for r in runs)
    assert await search_attributes(stack.temporal, ride_id) == {
        "RideStatus": RideStatus.FAILED,
        "RiderId": "r1",
    }
    assert await workflow(stack.temporal, ride_id).query("status") == RideStatus.FAILED

    r = await stack.call("POST", f"/v1/rides/{ride_id}/cancel", "rider", "r1", want=409)
    assert r.json()["status"] == 409


async def test_transient_payment_failure_is_retried_then_succeeds(stack: Stack) -> None:
    await driver_online(stack, "d1", NEAR)
    ride_id = await request_ride(stack, payment_method="card_flaky")
    await accept(stack, ride_id, "d1")
    await drive(stack, ride_id, "d1")

    # the sandbox failed the first two attempts; the third went through, once
    runs = await activity_runs(stack.temporal, ride_id)
    authorize = [r for r in runs if r["name"] == Step.AUTHORIZE_PAYMENT]
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
    assert meta.current_details == (f"Offered to driver d1; waiting up to "
                                    f"{stack.settings.offer_timeout_s:.0f} s for an answer")
    assert "status" in [q.name for q in meta.definition.query_definitions]
    assert await handle.query("status") == RideStatus.MATCHING
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
        "RideStatus": RideStatus.COMPLETED,
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

    assert ride["status"] == RideStatus.CANCELLED and ride["failure_reason"] is None
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
        "RideStatus": RideStatus.CANCELLED,
        "RiderId": "r1",
    }


async def test_rider_cancels_while_no_driver_is_found(stack: Stack) -> None:
    ride_id = await request_ride(stack)
    await stack.wait_status(ride_id, "r1", RideStatus.MATCHING)
    await stack.call("POST", f"/v1/rides/{ride_id}/cancel", "rider", "r1", want=202)
    ride = await ended(stack, ride_id)
    assert ride["status"] == RideStatus.CANCELLED and ride["payment"]["status"] == "voided"
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
        "RideStatus": RideStatus.MATCHING,
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
        "RideStatus": RideStatus.COMPLETED,
        "RiderId": "r1",
        "DriverId": "d2",
    }


