"""The chaos suite's mixed workload: riders and drivers through the HTTP API, each ride
played to a plan (completed, declined then accepted, an offer left to expire, the rider
cancelling before or after the assignment, inside or past the free window, the driver
backing out), with what each person did recorded so the outcome can be judged.

Calls that fail while a fault is on (connection refused, 5xx) are counted as refused and
retried: a rider keeps trying to request (with an ``Idempotency-Key``, so a retried
request never books twice), a driver keeps reporting, as real apps do."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ridehail.load.apiclient import Api

PLANS = ("complete", "complete", "complete", "decline_then_accept", "expire",
         "rider_cancel_early", "rider_cancel_free", "rider_cancel_late", "driver_cancel")
TERMINAL = ("completed", "cancelled", "failed")
PICKUP = {"lat": 40.7500, "lng": -73.9900}
DROPOFF = {"lat": 40.7600, "lng": -73.9700}


@dataclass
class RideRecord:
    """A ride's plan, and what its rider and drivers managed to do."""

    plan: str
    rider: str
    ride_id: str | None = None
    offers_seen: int = 0
    accepted_by: str | None = None
    assigned_at: float | None = None
    rider_cancelled: bool = False
    driver_cancelled: bool = False
    completed_report: bool = False
    final: dict[str, Any] | None = None
    finished_at: float | None = None  # monotonic: when its rider saw it end


@dataclass
class Counters:
    calls: int = 0
    refused: int = 0  # connection refused, timed out or 5xx: the fault showed
    refused_times: list[float] = field(default_factory=list)


class Workload:
    def __init__(self, api: Api, *, rides: int, drivers: int, concurrency: int,
                 free_cancel_s: float, seed: int, tag: str) -> None:
        self.api = api
        self.free_cancel_s = free_cancel_s
        self.concurrency = concurrency
        rng = random.Random(seed)
        self.records = [RideRecord(rng.choice(PLANS), f"{tag}-rider-{i}") for i in range(rides)]
        self.drivers = [f"{tag}-driver-{i}" for i in range(drivers)]
        self.by_ride: dict[str, RideRecord] = {}
        self.counters = Counters()
        self._stop = asyncio.Event()
        self._answered: set[str] = set()  # offers a driver has dealt with

    # -- calls that outlast faults ----------------------------------------------------

    async def _call(self, method: str, path: str, role: str, sub: str, body: Any = None,
                    headers: dict[str, str] | None = None, patience_s: float = 600
                    ) -> httpx.Response:
        """The call, repeated while it fails for the infrastructure's reasons."""
        deadline = time.monotonic() + patience_s
        delay = 0.2
        while True:
            self.counters.calls += 1
            try:
                r = await self.api.http.request(
                    method, path, json=body,
                    headers={**self.api.headers(role, sub), **(headers or {})})
                if r.status_code < 500:
                    return r
            except httpx.HTTPError:
                pass
            self.counters.refused += 1
            self.counters.refused_times.append(time.monotonic())
            if time.monotonic() > deadline:
                raise TimeoutError(f"{method} {path} kept failing for {patience_s:.0f}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    # -- people ------------------------------------------------------------------------

    async def drivers_online(self) -> None:
        for i, d in enumerate(self.drivers):
            await self._call("PUT", "/v1/drivers/me", "driver", d, {
                "name": f"Driver {i}", "vehicle": {"make": "Kia", "model": "Niro",
                                                   "plate": f"CH{i:04d}"}})
            at = {"lat": PICKUP["lat"] + 0.0005 * (i % 5), "lng": PICKUP["lng"] + 0.0005 * (i // 5)}
            r = await self._call("POST", "/v1/drivers/me/online", "driver", d, at)
            if r.status_code != 200:
                raise RuntimeError(f"driver {d} could not go online: {r.status_code} {r.text}")

    async def drivers_offline(self) -> None:
        for d in self.drivers:
            await self._call("POST", "/v1/drivers/me/offline", "driver", d)

    async def _driver(self, driver: str) -> None:
        while not self._stop.is_set():
            r = await self._call("GET", "/v1/drivers/me/offers", "driver", driver)
            offers = r.json() if r.status_code == 200 else []
            for offer in offers:
                key = str(offer.get("offer_id") or (offer["ride_id"], driver,
                                                    offer.get("expires_at")))
                rec = self.by_ride.get(offer["ride_id"])
                if rec is not None and key not in self._answered:
                    self._answered.add(key)
                    await self._answer(driver, rec)
                    break
            await asyncio.sleep(0.3)

    async def _answer(self, driver: str, rec: RideRecord) -> None:
        assert rec.ride_id is not None
        rec.offers_seen += 1
        first = rec.offers_seen == 1
        if first and rec.plan == "decline_then_accept":
            await self._call("POST", f"/v1/rides/{rec.ride_id}/decline", "driver", driver)
            return
        if first and rec.plan == "expire":
            return  # left unanswered: it expires
        r = await self._call("POST", f"/v1/rides/{rec.ride_id}/accept", "driver", driver)
        if r.status_code != 202:
            return  # expired or taken meanwhile
        rec.accepted_by = driver
        if not await self._until_status(rec, ("driver_assigned",), driver=driver):
            return
        rec.assigned_at = time.monotonic()
        if rec.plan == "driver_cancel" and not rec.driver_cancelled:
            r = await self._call("POST", f"/v1/rides/{rec.ride_id}/cancel", "driver", driver,
                                 {"reason": "flat tyre"})
            rec.driver_cancelled = r.status_code == 202
            rec.plan = "complete"  # the next driver completes it
            return
        if rec.plan.startswith("rider_cancel") and rec.plan != "rider_cancel_early":
            return  # the rider cancels; this driver waits to be released
        for step in ("arrive", "start"):
            r = await self._call("POST", f"/v1/rides/{rec.ride_id}/{step}", "driver", driver)
            if r.status_code != 202:
                return
        r = await self._call("POST", f"/v1/rides/{rec.ride_id}/complete", "driver", driver,
                             {"distance_m": 2300, "duration_s": 540})
        rec.completed_report = r.status_code == 202

    async def _rider(self, rec: RideRecord, slots: asyncio.Semaphore) -> None:
        async with slots:
            key = uuid.uuid4().hex
            r = await self._call("POST", "/v1/rides", "rider", rec.rider,
                                 {"pickup": PICKUP, "dropoff": DROPOFF},
                                 headers={"Idempotency-Key": key})
            if r.status_code != 202:
                rec.final = {"status": f"refused {r.status_code}", "detail": r.text[:200]}
                return
            rec.ride_id = r.json()["ride_id"]
            self.by_ride[rec.ride_id] = rec
            if rec.plan == "rider_cancel_early":
                await self._cancel(rec)
            elif rec.plan in ("rider_cancel_free", "rider_cancel_late"):
                if await self._until_status(rec, ("driver_assigned",), rider=True):
                    if rec.plan == "rider_cancel_late":
                        await asyncio.sleep(self.free_cancel_s + 2)
                    await self._cancel(rec)
            if await self._until_status(rec, TERMINAL, rider=True, patience_s=900):
                rec.finished_at = time.monotonic()

    async def _cancel(self, rec: RideRecord) -> None:
        r = await self._call("POST", f"/v1/rides/{rec.ride_id}/cancel", "rider", rec.rider,
                             {"reason": "changed my mind"})
        rec.rider_cancelled = r.status_code == 202

    async def _until_status(self, rec: RideRecord, wanted: tuple[str, ...], *,
                            rider: bool = False, driver: str | None = None,
                            patience_s: float = 300) -> bool:
        """Poll the ride until its status is one of ``wanted`` (True) or it ends (False)."""
        role, sub = ("rider", rec.rider) if rider or driver is None else ("driver", driver)
        deadline = time.monotonic() + patience_s
        while time.monotonic() < deadline:
            r = await self._call("GET", f"/v1/rides/{rec.ride_id}", role, sub)
            if r.status_code == 200:
                body = r.json()
                if rider:
                    rec.final = body
                if body["status"] in wanted:
                    return True
                if body["status"] in TERMINAL:
                    return False
            await asyncio.sleep(0.25)
        return False

    # -- the round ---------------------------------------------------------------------

    async def run(self, during: Callable[[], Any] | None = None) -> None:
        """Play every ride to its end; ``during`` (a coroutine function: the fault) runs
        alongside once the first rides are under way."""
        await self.drivers_online()
        drivers = [asyncio.create_task(self._driver(d)) for d in self.drivers]
        slots = asyncio.Semaphore(self.concurrency)
        riders = [asyncio.create_task(self._rider(rec, slots)) for rec in self.records]
        fault = asyncio.create_task(during()) if during is not None else None
        try:
            await asyncio.gather(*riders)
            if fault is not None:
                await fault
        finally:
            self._stop.set()
            await asyncio.gather(*drivers, return_exceptions=True)
