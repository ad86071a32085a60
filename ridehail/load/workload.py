"""The riders and drivers of ``ridehail bench`` and of its soak, through the HTTP API.

The bench's drivers go online at random places in the city and wait until available. A
rider requests a ride, follows it on its event stream (``GET /v1/rides/{id}/events``,
Server-Sent Events) and, acting for the driver the saga picked, accepts the offer and
reports arrival, start and end at once. Latencies are measured by the client, from just
before ``POST /v1/rides`` to the moment the ``ride.driver_assigned`` and the ending event
arrive on the stream."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime

from ridehail.load.apiclient import TERMINAL_EVENTS, Api, ApiError
from ridehail.load.benchfigures import RideResult
from ridehail.load.city import City, coords

RIDER_PREFIX = "bench-r"
DRIVER_PREFIX = "bench-d"


class RidehailWorkload:
    """Riders and drivers of the bench, through the HTTP API."""

    def __init__(self, api: Api, city: City, drivers: int, seed: int,
                 ride_timeout_s: float) -> None:
        self.api = api
        self.city = city
        self.drivers = [f"{DRIVER_PREFIX}{i}" for i in range(drivers)]
        self.rng = random.Random(seed)
        self.ride_timeout_s = ride_timeout_s

    async def drivers_online(self) -> None:
        """Every bench driver online at a random place, and available (a driver left
        reserved by an interrupted earlier run is waited for)."""
        sem = asyncio.Semaphore(10)

        async def online(driver_id: str) -> None:
            async with sem:
                await self.api.driver_online(driver_id, self.city.random_point(self.rng))

        await asyncio.gather(*(online(d) for d in self.drivers))
        deadline = time.monotonic() + 60
        waiting = list(self.drivers)
        while waiting:
            still = []
            for d in waiting:
                me = await self.api.expect("GET", "/v1/drivers/me", "driver", d)
                if me["status"] != "available":
                    still.append(d)
            waiting = still
            if waiting:
                if time.monotonic() > deadline:
                    raise ApiError(f"{len(waiting)} drivers not available after 60 s, "
                                   f"e.g. {waiting[0]}")
                await asyncio.sleep(0.1)

    async def drivers_offline(self) -> None:
        sem = asyncio.Semaphore(10)

        async def offline(driver_id: str) -> None:
            async with sem:
                await self.api.call("POST", "/v1/drivers/me/offline", "driver", driver_id)

        await asyncio.gather(*(offline(d) for d in self.drivers))

    async def ride(self, i: int) -> RideResult:
        rider = f"{RIDER_PREFIX}{i}"
        pickup, dropoff = self.city.random_trip(self.rng)
        t0 = time.perf_counter()
        ride = await self.api.expect("POST", "/v1/rides", "rider", rider,
                                     {"pickup": coords(pickup), "dropoff": coords(dropoff)})
        ride_id = ride["ride_id"]
        result = RideResult("timeout")
        try:
            async with asyncio.timeout(self.ride_timeout_s):
                await self._follow(ride_id, rider, t0, result)
        except TimeoutError:
            result.status = "timeout"
            result.error = f"ride {ride_id} did not end within {self.ride_timeout_s:.0f} s"
        return result

    async def _follow(self, ride_id: str, rider: str, t0: float, result: RideResult) -> None:
        """Read the ride's events; act for its driver as soon as each step allows."""
        driver: str | None = None
        async with self.api.ride_events(ride_id, "rider", rider) as events:
            async for e in events:
                kind = e.event
                if kind.startswith("ride."):  # parsed once, for the timing and the driver
                    event = e.json()
                    result.events.append((kind, _component(event.get("source", "")),
                                          datetime.fromisoformat(event["time"])))
                if kind == "ride.driver_offered":
                    driver = event["data"]["driver_id"]
                    await self.api.expect("POST", f"/v1/rides/{ride_id}/accept", "driver",
                                          driver)
                elif kind == "ride.driver_assigned":
                    result.to_assigned_s = time.perf_counter() - t0
                    driver = event["data"]["driver_id"]
                    result.retries += await self.api.driver_report(ride_id, driver, "arrive")
                elif kind == "ride.driver_arrived" and driver:
                    result.retries += await self.api.driver_report(ride_id, driver, "start")
                elif kind == "ride.trip_started" and driver:
                    trip = {"distance_m": self.rng.randint(800, 6000),
                            "duration_s": self.rng.randint(180, 1200)}
                    result.retries += await self.api.driver_report(ride_id, driver, "complete",
                                                                   trip)
                elif kind in TERMINAL_EVENTS:
                    result.to_end_s = time.perf_counter() - t0
                    result.status = kind.removeprefix("ride.")
                    return
                elif kind == "problem":
                    raise ApiError(f"the event stream of ride {ride_id} broke: {e.data}")
        raise ApiError(f"the event stream of ride {ride_id} ended before the ride did")


def _component(source: str) -> str:
    """``ridehail/api`` → ``api``: who committed an event."""
    return source.rpartition("/")[2] or source
