"""``projections rebuild`` brings the read models back to the same state from the
streams alone."""

from __future__ import annotations

from sqlmodel import select

from domain.status import RideStatus
from events.lag import all_caught_up
from infra.config import Settings
from ridehail.ops.rebuild import rebuild_projections
from ridehail.processes.components import runtime
from store.tables import Driver, Ride
from tests.support.rides import DROPOFF, PICKUP, driver_online
from tests.support.stack import Stack, eventually, running_stack


def snapshot(stack_or_session) -> dict:  # type: ignore[no-untyped-def]
    rides = {r.ride_id: r.model_dump() for r in stack_or_session.exec(select(Ride))}
    drivers = {d.driver_id: (d.status, d.ride_id, d.lat, d.lng, d.h3_cell, d.name)
               for d in stack_or_session.exec(select(Driver))}
    return {"rides": rides, "drivers": drivers}


async def drive(stack: Stack, ride_id: str, driver: str, until: str) -> None:
    steps = [("accept", "driver_assigned", {}), ("arrive", "driver_arrived", {}),
             ("start", "in_progress", {}),
             ("complete", "completed", {"distance_m": 2000, "duration_s": 400})]
    for action, status, body in steps:
        await stack.call("POST", f"/v1/rides/{ride_id}/{action}", "driver", driver, want=202,
                         json=body)
        await stack.wait_status(ride_id, "r1", status)
        if status == until:
            return


async def test_rebuild_restores_the_read_models(settings: Settings) -> None:
    async with running_stack(settings) as stack:
        await driver_online(stack, "d1", {"lat": 40.7505, "lng": -73.9905})
        await driver_online(stack, "d2", {"lat": 40.7510, "lng": -73.9910})
        await driver_online(stack, "d3", {"lat": 40.7400, "lng": -73.9800})
        await stack.call("POST", "/v1/drivers/me/location", "driver", "d3", want=202,
                         json={"lat": 40.7401, "lng": -73.9801})
        await stack.call("POST", "/v1/drivers/me/offline", "driver", "d3", want=200)

        # one ride completed, one waiting at pickup (its rider has an open ride, so the
        # third is another rider's), one cancelled while matching
        rides = []
        for until, rider in (("completed", "r1"), ("driver_arrived", "r1"), (None, "r2")):
            r = await stack.call("POST", "/v1/rides", "rider", rider, want=202,
                                 json={"pickup": PICKUP, "dropoff": DROPOFF})
            ride_id = r.json()["ride_id"]
            rides.append(ride_id)
            if until is None:
                await stack.call("POST", f"/v1/rides/{ride_id}/cancel", "rider", rider,
                                 want=202)
                await stack.wait_status(ride_id, rider, RideStatus.CANCELLED)
                continue

            async def offered(ride_id: str = ride_id) -> str | None:
                for d in ("d1", "d2"):
                    found = (await stack.call("GET", "/v1/drivers/me/offers", "driver", d,
                                              want=200)).json()
                    if any(o["ride_id"] == ride_id for o in found):
                        return d
                return None

            driver = await eventually(offered, f"an offer of {ride_id}")
            await drive(stack, ride_id, driver, until)
        await eventually(lambda: all_caught_up(stack.rt.js), "the consumers to catch up")
        before = stack.query(snapshot)

    async with runtime(settings, "rebuild", temporal=False) as rt:
        result = await rebuild_projections(rt.db, rt.js)
        with rt.db.reading() as session:
            after = snapshot(session)
    assert result.rides == 3 and result.rides_events > 10 and result.driver_events == 5
    differences = [
        (ride_id, field, before["rides"][ride_id][field], row.get(field))
        for ride_id, row in after["rides"].items()
        for field in before["rides"].get(ride_id, {})
        if before["rides"][ride_id][field] != row.get(field)
    ]
    assert differences == []
    assert after == before
    assert before["drivers"]["d3"][0] == "offline"
    assert before["rides"][rides[1]]["status"] == RideStatus.DRIVER_ARRIVED
