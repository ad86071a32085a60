"""One ride end to end through the HTTP API only, against real Temporal, NATS and the
database: every status on the way, the ledger, the driver and the events in order."""

from __future__ import annotations

from sqlmodel import select

from domain.status import RideStatus
from store.tables import Driver, LedgerEntry
from tests.support.rides import DROPOFF, PICKUP, driver_online, wait_offer
from tests.support.stack import Stack, eventually


async def test_one_ride_end_to_end(stack: Stack) -> None:
    await driver_online(stack, "d1", {"lat": 40.7505, "lng": -73.9905})

    r = await stack.call("POST", "/v1/rides", "rider", "r1", want=202,
                         json={"pickup": PICKUP, "dropoff": DROPOFF})
    ride = r.json()
    ride_id = ride["ride_id"]
    assert r.headers["location"] == f"/v1/rides/{ride_id}"
    assert ride["status"] == RideStatus.REQUESTED

    matching = await stack.wait_status(ride_id, "r1", RideStatus.MATCHING)
    assert matching["payment"]["status"] == "authorized"
    quoted = matching["fare"]["quoted"]
    assert float(matching["payment"]["authorized"]) > float(quoted) > 0

    offer = await wait_offer(stack, "d1", ride_id)
    assert offer["pickup"] == PICKUP and offer["fare"] == quoted
    me = (await stack.call("GET", "/v1/drivers/me", "driver", "d1", want=200)).json()
    assert me["status"] == "reserved" and me["ride_id"] == ride_id

    await stack.call("POST", f"/v1/rides/{ride_id}/accept", "driver", "d1", want=202)
    assigned = await stack.wait_status(ride_id, "r1", RideStatus.DRIVER_ASSIGNED)
    assert assigned["driver_id"] == "d1"

    await stack.call("POST", f"/v1/rides/{ride_id}/arrive", "driver", "d1", want=202)
    await stack.wait_status(ride_id, "r1", RideStatus.DRIVER_ARRIVED)
    await stack.call("POST", f"/v1/rides/{ride_id}/start", "driver", "d1", want=202)
    await stack.wait_status(ride_id, "r1", RideStatus.IN_PROGRESS)
    me = (await stack.call("GET", "/v1/drivers/me", "driver", "d1", want=200)).json()
    assert me["status"] == "on_trip"

    await stack.call("POST", f"/v1/rides/{ride_id}/complete", "driver", "d1", want=202,
                     json={"distance_m": 2300, "duration_s": 540})
    done = await stack.wait_status(ride_id, "r1", RideStatus.COMPLETED)
    assert done["payment"]["status"] == "captured"
    assert done["fare"]["final"] == done["payment"]["captured"]
    assert float(done["fare"]["final"]) <= float(done["payment"]["authorized"])
    assert done["failure_reason"] is None

    # the ledger: one hold, one capture of the final fare, no void
    entries = stack.query(lambda s: list(
        s.exec(select(LedgerEntry).where(LedgerEntry.ride_id == ride_id)
               .order_by(LedgerEntry.id))))  # type: ignore[arg-type]
    assert [e.kind for e in entries] == ["authorize", "capture"]
    assert entries[1].amount_cents == round(float(done["fare"]["final"]) * 100)
    assert all(e.idempotency_key.startswith(f"ride-{ride_id}:") for e in entries)

    # the driver is free again
    driver = stack.query(lambda s: s.get(Driver, "d1"))
    assert driver is not None and driver.status == "available" and driver.ride_id is None

    # the events, in the order they were published
    events = (await stack.call("GET", f"/v1/rides/{ride_id}/events", "rider", "r1",
                               want=200)).json()["events"]
    assert [e["type"] for e in events] == [
        "ride.requested",
        "ride.payment_authorized",
        "ride.driver_offered",
        "ride.driver_accepted",
        "ride.driver_assigned",
        "ride.driver_arrived",
        "ride.trip_started",
        "ride.trip_ended",
        "ride.driver_released",
        "ride.payment_captured",
        "ride.completed",
    ]
    for e in events:
        assert e["specversion"] == "1.0" and e["subject"] == ride_id
        assert e["datacontenttype"] == "application/json" and e["dataversion"] >= 1

    # the workflow: id ride-<id>, completed, search attributes current
    handle = stack.temporal.get_workflow_handle(f"ride-{ride_id}")
    assert await handle.query("status") == RideStatus.COMPLETED
    desc = await handle.describe()
    attrs = {pair.key.name: pair.value for pair in desc.typed_search_attributes}
    assert (attrs["RideStatus"], attrs["RiderId"], attrs["DriverId"]) == ("completed", "r1", "d1")
    assert desc.workflow_type == "RideWorkflow" and desc.task_queue == "rides"


async def test_going_offline_is_refused_while_the_driver_holds_a_ride(stack: Stack) -> None:
    await driver_online(stack, "d1", {"lat": 40.7505, "lng": -73.9905})
    r = await stack.call("POST", "/v1/rides", "rider", "r1", want=202,
                         json={"pickup": PICKUP, "dropoff": DROPOFF})
    ride_id = r.json()["ride_id"]
    await wait_offer(stack, "d1", ride_id)
    refused = await stack.call("POST", "/v1/drivers/me/offline", "driver", "d1", want=409)
    assert "reserved" in refused.json()["detail"]
    await stack.call("POST", f"/v1/rides/{ride_id}/decline", "driver", "d1", want=202)

    async def released() -> bool:
        me = await stack.call("GET", "/v1/drivers/me", "driver", "d1", want=200)
        return me.json()["status"] == "available"

    await eventually(released, "the driver to be released")
    gone = await stack.call("POST", "/v1/drivers/me/offline", "driver", "d1", want=200)
    assert gone.json()["status"] == "offline"
    # and back online, available at once
    back = await stack.call("POST", "/v1/drivers/me/online", "driver", "d1", want=200,
                            json={"lat": 40.7505, "lng": -73.9905})
    assert back.json()["status"] == "available"
