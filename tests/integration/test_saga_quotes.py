"""A ride requested with a live quote keeps the quote's price, whatever the surge has
done since (the saga's quote step, end to end)."""

from __future__ import annotations

from domain.status import RideStatus
from tests.support.rides import (
    DROPOFF,
    FARTHEST,
    PICKUP,
    driver_online,
    quoted_fare,
    request_ride,
)
from tests.support.stack import Stack


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
        await stack.wait_status(other, other_rider(others, other), RideStatus.MATCHING)

    quoted = await request_ride(stack, quote_id=quote["quote_id"])
    fresh = await request_ride(stack, "r2")
    kept = await stack.wait_status(quoted, "r1", RideStatus.MATCHING)
    repriced = await stack.wait_status(fresh, "r2", RideStatus.MATCHING)
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
