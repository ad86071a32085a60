"""The trip meter: the driver's location reports during the trip are summed on the
server, and the final fare uses the driver's reported figures only when they agree
with it (or, with too few points, with the route estimate). A trip in progress ends
with ``complete``: the driver cannot cancel it, and an admin's cancel charges the
metered trip so far."""

from __future__ import annotations

from decimal import Decimal
from itertools import pairwise

from domain.geo import Point, haversine_m
from domain.pricing import estimate_trip, fare_cents
from domain.status import RideStatus
from tests.support.problems import PROBLEM_JSON
from tests.support.rides import (
    DROPOFF,
    NEAR,
    PICKUP,
    accept,
    answer,
    driver_online,
    ended,
    events,
    ledger,
    quoted_fare,
    request_ride,
)
from tests.support.stack import Stack

# the route driven: the pickup to the dropoff in four steps
ROUTE = [{"lat": PICKUP["lat"] + (DROPOFF["lat"] - PICKUP["lat"]) * i / 4,
          "lng": PICKUP["lng"] + (DROPOFF["lng"] - PICKUP["lng"]) * i / 4} for i in range(5)]


def metered(points: list[dict[str, float]]) -> float:
    return sum(haversine_m(Point(**a), Point(**b)) for a, b in pairwise(points))


async def on_the_trip(stack: Stack, driver: str = "d1", route: bool = True) -> str:
    await driver_online(stack, driver, NEAR)
    ride_id = await request_ride(stack)
    await accept(stack, ride_id, driver)
    await answer(stack, ride_id, driver, "arrive")
    await stack.call("POST", "/v1/drivers/me/location", "driver", driver, want=202,
                     json=PICKUP)
    await answer(stack, ride_id, driver, "start")
    await stack.wait_status(ride_id, "r1", RideStatus.IN_PROGRESS)
    for point in ROUTE[1:] if route else []:
        await stack.call("POST", "/v1/drivers/me/location", "driver", driver, want=202,
                         json=point)
    return ride_id


async def complete(stack: Stack, ride_id: str, distance_m: int, duration_s: int) -> dict:
    await stack.call("POST", f"/v1/rides/{ride_id}/complete", "driver", "d1", want=202,
                     json={"distance_m": distance_m, "duration_s": duration_s})
    return await stack.wait_status(ride_id, "r1", RideStatus.COMPLETED)


async def test_an_absurd_trip_report_does_not_set_the_fare(stack: Stack) -> None:
    ride_id = await on_the_trip(stack, route=False)  # no points: the route estimate rules
    done = await complete(stack, ride_id, 290_000, 86_400)

    fare, quoted = Decimal(done["fare"]["final"]), Decimal(done["fare"]["quoted"])
    assert fare <= Decimal("1.5") * quoted
    assert done["payment"]["captured"] == done["fare"]["final"]
    adjusted = done["fare"]["adjusted"]
    assert adjusted["reported"] == {"distance_m": 290_000, "duration_s": 86_400}
    estimate = estimate_trip(Point(**PICKUP), Point(**DROPOFF)).distance_m
    assert adjusted["used"]["distance_m"] == estimate
    assert adjusted["used"]["duration_s"] < 60  # the seconds between start and end
    assert "route estimate" in adjusted["reason"] and "duration" in adjusted["reason"]
    assert fare == Decimal(fare_cents(estimate, adjusted["used"]["duration_s"], 1.0)) / 100
    completed = (await events(stack, ride_id))[-1]
    assert completed["data"]["fare_adjusted"] == adjusted
    assert completed["data"]["distance_m"] == estimate
    assert completed["dataschema"] == "https://ridehail.dev/events/ride.completed/v1.json"


async def test_a_report_far_from_the_meter_is_charged_as_metered(stack: Stack) -> None:
    ride_id = await on_the_trip(stack)
    done = await complete(stack, ride_id, 9_000, 20)

    meter = round(metered(ROUTE))
    adjusted = done["fare"]["adjusted"]
    assert adjusted["used"] == {"distance_m": meter, "duration_s": 20}
    assert "meter" in adjusted["reason"]
    assert done["fare"]["final"] == f"{fare_cents(meter, 20, 1.0) / 100:.2f}"


async def test_a_report_that_agrees_with_the_meter_is_charged_as_reported(
    stack: Stack,
) -> None:
    ride_id = await on_the_trip(stack)
    reported = round(metered(ROUTE) * 1.2)  # a longer way round than the straight steps
    done = await complete(stack, ride_id, reported, 25)

    assert done["fare"]["adjusted"] is None
    assert done["fare"]["final"] == f"{fare_cents(reported, 25, 1.0) / 100:.2f}"


async def test_a_trip_in_progress_cannot_be_cancelled_by_its_driver(stack: Stack) -> None:
    ride_id = await on_the_trip(stack, route=False)
    r = await stack.call("POST", f"/v1/rides/{ride_id}/cancel", "driver", "d1", want=409)
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
    assert "complete" in r.json()["detail"]
    done = await complete(stack, ride_id, 2600, 20)  # the trip goes on, and ends
    assert done["payment"]["status"] == "captured"


async def test_an_admin_cancel_of_a_trip_in_progress_charges_the_meter_so_far(
    stack: Stack,
) -> None:
    ride_id = await on_the_trip(stack)
    await stack.call("POST", f"/v1/rides/{ride_id}/cancel", "admin", "root", want=202,
                     json={"reason": "the car broke down"})
    ride = await ended(stack, ride_id)

    assert ride["status"] == RideStatus.CANCELLED
    used = ride["fare"]["adjusted"]["used"]
    assert used["distance_m"] == round(metered(ROUTE)) and used["duration_s"] < 60
    assert ride["fare"]["adjusted"]["reported"] is None
    charged = fare_cents(used["distance_m"], used["duration_s"], 1.0)
    assert ride["fare"]["final"] == ride["payment"]["captured"] == f"{charged / 100:.2f}"
    assert ride["payment"]["status"] == "captured" and ride["fare"]["cancellation_fee"] is None
    assert [kind for kind, _ in ledger(stack, ride_id)] == ["authorize", "capture"]
    assert ledger(stack, ride_id)[1][1] <= ledger(stack, ride_id)[0][1]  # within the hold
    assert quoted_fare() > 0
