"""``ridehail simulate`` on a small, fast city against the in-process stack: rides are
requested, offered, driven and completed through the API; the live view renders; the
stop leaves every driver offline."""

from __future__ import annotations

import io
import random

from rich.console import Console
from sqlmodel import select

from domain.geo import haversine_m
from ridehail.load.city import City, towards
from ridehail.load.simstate import SimConfig, SimState, print_summary
from ridehail.load.simulate import run_simulation
from store.tables import Driver
from tests.support.stack import Stack, eventually

DRIVERS = 4


def test_city_points_stay_inside_and_trips_move_in_steps() -> None:
    city = City(radius_m=2000)
    rng = random.Random(1)
    for _ in range(200):
        assert haversine_m(city.centre, city.random_point(rng)) <= 2000.5
    a, b = city.random_trip(rng)
    assert haversine_m(a, b) >= 500
    step = towards(a, b, 100)
    assert abs(haversine_m(a, step) - 100) < 1
    assert towards(a, b, 10**6) == b


def completed(state: SimState) -> bool:
    return state.rides_by_status()["completed"] >= 2


async def test_a_small_city_completes_rides(stack: Stack) -> None:
    cfg = SimConfig(city=City(radius_m=1200), drivers=DRIVERS, rate_per_min=60,
                    p_accept=1.0, p_decline=0.0, speedup=200, ping_s=0.2, boarding_s=5,
                    seed=3)
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    summary = await run_simulation(stack.settings, cfg, console, until=completed,
                                   duration_s=120)

    assert summary.statuses.get("completed", 0) >= 2, summary
    assert summary.requested >= 2 and summary.drivers == DRIVERS
    assert sum(summary.statuses.values()) == summary.requested
    assert summary.offers.get("accepted", 0) >= 2
    assert summary.trips >= 2 and summary.mean_trip_m is not None
    assert 0 < summary.mean_trip_m <= 2 * 1200
    assert summary.mean_surge is not None and summary.mean_surge >= 1.0
    assert summary.to_assign_p50_s is not None and summary.to_assign_p50_s > 0
    assert summary.errors == {}, summary.errors

    # the stop cancelled what was open and took every driver offline (as soon as the
    # driver-projector has applied it)
    async def all_offline() -> bool:
        drivers = stack.query(lambda s: list(s.exec(select(Driver))))
        return len(drivers) == DRIVERS and {d.status for d in drivers} == {"offline"}

    await eventually(all_offline, "every simulated driver to be offline")

    print_summary(summary, console)
    text = out.getvalue()
    for heading in ("rides", "drivers", "surge by zone", "RIDES events/s", "simulation summary"):
        assert heading in text
