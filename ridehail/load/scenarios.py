"""Scripted riders and drivers for every path of the ride saga, through the HTTP API.

Each scenario plays one ride in its own patch of the map (so its drivers are the only
ones near its pickup) and returns the ride id once the ride has ended. They are what
``ridehail histories record`` runs to record the replay-test histories, and they make a
quick manual check of a running stack. Timer paths wait for the server's own timeouts,
so run the stack with short ones (see docs/VERSIONING.md).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from domain.status import RideStatus
from ridehail.load.apiclient import Api, poll_until

# Concurrent scenes each get a patch of a grid this big (more scenes share patches).
PATCH_COLUMNS, PATCH_ROWS = 4, 3


class ScenarioError(RuntimeError):
    pass


@dataclass
class Timeouts:
    """The stack's RIDEHAIL_OFFER_TIMEOUT_S, _MATCHING_DEADLINE_S and _FREE_CANCEL_S."""

    offer_s: float
    matching_deadline_s: float
    free_cancel_s: float


class Scene:
    """One scenario's scene: its patch of the map, its people and the API they use."""

    def __init__(self, api: Api, index: int, timeouts: Timeouts, wait_s: float = 60.0) -> None:
        self.api = api
        self.timeouts = timeouts
        self.wait_s = wait_s
        self.tag = uuid.uuid4().hex[:6]
        # patches on a grid ~17 km apart around Times Square, inside the default service
        # area: further apart than matching searches (~13 km), so no scenario's driver is
        # ever offered another's ride
        row, column = divmod(index % (PATCH_COLUMNS * PATCH_ROWS), PATCH_COLUMNS)
        self.lat = round(40.758 + (row - 1) * 0.15, 6)
        self.lng = round(-73.9855 + (column - 1.5) * 0.2, 6)
        self.rider = f"rider-{self.tag}"

    def at(self, dlat: float = 0.0, dlng: float = 0.0) -> dict[str, float]:
        return {"lat": round(self.lat + dlat, 6), "lng": round(self.lng + dlng, 6)}

    async def call(self, method: str, path: str, role: str, sub: str, want: int,
                   **kw: Any) -> Any:
        r = await self.api.call(method, path, role, sub, kw.get("json"))
        if r.status_code != want:
            raise ScenarioError(f"{method} {path} as {role} {sub}: {r.status_code} (want "
                                f"{want}): {r.text[:300]}")
        return r.json() if r.content else None

    async def until(self, check: Callable[[], Awaitable[Any]], what: str,
                    limit: float | None = None) -> Any:
        try:
            return await poll_until(check, what, time.monotonic() + (limit or self.wait_s))
        except TimeoutError as e:
            raise ScenarioError(str(e)) from None

    async def driver(self, n: int, dlat: float = 0.0005) -> str:
        """A driver online a few dozen metres from the pickup (nearer for smaller n)."""
        driver = f"driver-{self.tag}-{n}"
        await self.call("PUT", "/v1/drivers/me", "driver", driver, 200, json={
            "name": f"Driver {n}", "vehicle": {"make": "Kia", "model": "Niro", "plate": driver}})
        await self.call("POST", "/v1/drivers/me/online", "driver", driver, 200,
                        json=self.at(dlat * n))

        async def available() -> bool:
            me = await self.call("GET", "/v1/drivers/me", "driver", driver, 200)
            return bool(me["status"] == "available")

        await self.until(available, f"{driver} to be available")
        return driver

    async def request(self, payment_method: str = "card") -> str:
        ride = await self.call("POST", "/v1/rides", "rider", self.rider, 202, json={
            "pickup": self.at(), "dropoff": self.at(0.01, 0.015),
            "payment_method": payment_method})
        return str(ride["ride_id"])

    async def ride(self, ride_id: str) -> dict[str, Any]:
        return await self.call("GET", f"/v1/rides/{ride_id}", "rider", self.rider, 200)

    async def status(self, ride_id: str, status: str, limit: float | None = None) -> None:
        async def reached() -> bool:
            return (await self.ride(ride_id))["status"] == status

        await self.until(reached, f"ride {ride_id} to be {status}", limit)

    async def offered(self, driver: str, ride_id: str) -> None:
        async def has_offer() -> bool:
            offers = await self.call("GET", "/v1/drivers/me/offers", "driver", driver, 200)
            return any(o["ride_id"] == ride_id for o in offers)

        await self.until(has_offer, f"an offer of {ride_id} to {driver}")

    async def act(self, driver: str, ride_id: str, action: str, **body: Any) -> None:
        await self.call("POST", f"/v1/rides/{ride_id}/{action}", "driver", driver, 202,
                        json=body)

    async def accept(self, driver: str, ride_id: str) -> None:
        await self.offered(driver, ride_id)
        await self.act(driver, ride_id, "accept")
        await self.status(ride_id, RideStatus.DRIVER_ASSIGNED)

    async def trip(self, driver: str, ride_id: str) -> None:
        await self.act(driver, ride_id, "arrive")
        await self.status(ride_id, RideStatus.DRIVER_ARRIVED)
        await self.act(driver, ride_id, "start")
        await self.status(ride_id, RideStatus.IN_PROGRESS)
        # what the trip took here (seconds): the fare is checked against its event times
        await self.act(driver, ride_id, "complete", distance_m=2600, duration_s=20)
        await self.status(ride_id, RideStatus.COMPLETED)

    async def cancel(self, ride_id: str, role: str = "rider", who: str | None = None) -> None:
        await self.call("POST", f"/v1/rides/{ride_id}/cancel", role, who or self.rider, 202,
                        json={"reason": f"{role} changed plans"})


# --- the saga's paths ----------------------------------------------------------------------


async def happy_path(scene: Scene) -> str:
    driver = await scene.driver(1)
    ride = await scene.request()
    await scene.accept(driver, ride)
    await scene.trip(driver, ride)
    return ride


async def payment_declined(scene: Scene) -> str:
    await scene.driver(1)
    ride = await scene.request(payment_method="card_declined")
    await scene.status(ride, RideStatus.FAILED)
    return ride


async def transient_payment_failure(scene: Scene) -> str:
    driver = await scene.driver(1)
    ride = await scene.request(payment_method="card_flaky")
    await scene.accept(driver, ride)
    await scene.trip(driver, ride)
    return ride


async def no_driver(scene: Scene) -> str:
    ride = await scene.request()
    await scene.status(ride, RideStatus.FAILED, limit=scene.timeouts.matching_deadline_s + 30)
    return ride


async def decline_then_accept(scene: Scene) -> str:
    first, second = await scene.driver(1), await scene.driver(2)
    ride = await scene.request()
    await scene.offered(first, ride)
    await scene.act(first, ride, "decline")
    await scene.accept(second, ride)
    await scene.trip(second, ride)
    return ride


async def offer_timeout_then_accept(scene: Scene) -> str:
    first, second = await scene.driver(1), await scene.driver(2)
    ride = await scene.request()
    await scene.offered(first, ride)  # ...and let it expire
    await scene.accept(second, ride)
    await scene.trip(second, ride)
    return ride


async def rider_cancels_before_assignment(scene: Scene) -> str:
    driver = await scene.driver(1)
    ride = await scene.request()
    await scene.offered(driver, ride)
    await scene.cancel(ride)
    await scene.status(ride, RideStatus.CANCELLED)
    return ride


async def rider_cancels_within_free_window(scene: Scene) -> str:
    driver = await scene.driver(1)
    ride = await scene.request()
    await scene.accept(driver, ride)
    await scene.cancel(ride)
    await scene.status(ride, RideStatus.CANCELLED)
    return ride


async def rider_cancels_after_free_window(scene: Scene) -> str:
    driver = await scene.driver(1)
    ride = await scene.request()
    await scene.accept(driver, ride)
    await asyncio.sleep(scene.timeouts.free_cancel_s + 1)
    await scene.cancel(ride)
    await scene.status(ride, RideStatus.CANCELLED)
    return ride


async def driver_cancels_after_accepting(scene: Scene) -> str:
    first, second = await scene.driver(1), await scene.driver(2)
    ride = await scene.request()
    await scene.accept(first, ride)
    await scene.cancel(ride, role="driver", who=first)
    await scene.accept(second, ride)
    await scene.trip(second, ride)
    return ride


SCENARIOS: dict[str, Callable[[Scene], Awaitable[str]]] = {
    f.__name__: f
    for f in (
        happy_path,
        payment_declined,
        transient_payment_failure,
        no_driver,
        decline_then_accept,
        offer_timeout_then_accept,
        rider_cancels_before_assignment,
        rider_cancels_within_free_window,
        rider_cancels_after_free_window,
        driver_cancels_after_accepting,
    )
}
