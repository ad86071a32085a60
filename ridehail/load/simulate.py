"""``ridehail simulate``: a small city whose riders and drivers use the real HTTP API.

Drivers go online at random places, wander and ping their location, and answer offers
(accept, decline or ignore them, with the given probabilities); a driver who accepted
drives to the pickup and on to the destination at a city speed, with time compressed by
``speedup``, and completes the ride with the distance and the (simulated) time they drove.
Riders appear at random — a Poisson process at ``rate`` a minute — ask for a quote,
request the ride and follow it. A live view shows rides and drivers by status, surge by
zone and the event rate, until Ctrl-C (or ``--duration``); then open rides are cancelled,
the drivers go offline, and a summary is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live

from domain.geo import Point, haversine_m, zone_cell
from domain.status import FINAL, RideStatus
from infra.config import Settings
from ridehail.load.apiclient import Api, ApiError
from ridehail.load.city import coords, towards
from ridehail.load.simstate import (
    SimConfig,
    SimDriver,
    SimRide,
    SimState,
    Summary,
    render,
    summarize,
)

RIDE_POLL_S = 1.0  # how often a rider's app refreshes the ride
DRIVER_STATUS_EVERY = 5  # a driver re-reads their status every this many pings

class Simulation:
    def __init__(self, api: Api, cfg: SimConfig, state: SimState, stop: asyncio.Event) -> None:
        self.api = api
        self.cfg = cfg
        self.state = state
        self.stop = stop
        self.rng = random.Random(cfg.seed)
        self.run_id = uuid.uuid4().hex[:6]
        self.tasks: set[asyncio.Task[None]] = set()
        self.cancelled_at_stop = 0

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def pause(self, seconds: float) -> bool:
        """Sleep, unless the simulation stops first; True if it is still running."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)
        return not self.stop.is_set()

    # --- drivers ---------------------------------------------------------------------------

    async def driver(self, d: SimDriver) -> None:
        try:
            await self.api.driver_online(d.driver_id, d.pos)
        except (ApiError, OSError) as e:
            self.state.error("going online", e)
            d.activity = "offline"
            return
        d.activity, d.status = "wandering", "available"
        offers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        listener = asyncio.create_task(self.listen_for_offers(d, offers))
        waypoint = self.cfg.city.random_point(self.rng)
        answered: set[str] = set()
        pings = 0
        try:
            while not self.stop.is_set():
                try:
                    offer = await asyncio.wait_for(offers.get(), self.cfg.ping_s)
                except TimeoutError:
                    offer = None
                if offer is not None:
                    if offer["offer_id"] not in answered:
                        answered.add(offer["offer_id"])
                        await self.answer(d, offer)
                    continue
                d.pos = towards(d.pos, waypoint, self.step_m())
                if d.pos == waypoint:
                    waypoint = self.cfg.city.random_point(self.rng)
                await self.ping(d)
                pings += 1
                if pings % DRIVER_STATUS_EVERY == 0:
                    await self.refresh_status(d)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def listen_for_offers(self, d: SimDriver, queue: asyncio.Queue[dict[str, Any]]
                                ) -> None:
        """The driver app's live offer stream; reconnects if it drops."""
        while not self.stop.is_set():
            try:
                async with self.api.stream("/v1/drivers/me/offers", "driver",
                                           d.driver_id) as events:
                    async for e in events:
                        if e.event == "offer":
                            queue.put_nowait(e.json())
            except (ApiError, OSError) as e:
                self.state.error("offer stream", e)
            await self.pause(1.0)

    def step_m(self) -> float:
        return self.cfg.speed_mps * self.cfg.speedup * self.cfg.ping_s

    async def ping(self, d: SimDriver) -> None:
        try:
            await self.api.expect("POST", "/v1/drivers/me/location", "driver", d.driver_id,
                                  coords(d.pos))
        except (ApiError, OSError) as e:
            self.state.error("location ping", e)

    async def refresh_status(self, d: SimDriver) -> None:
        with contextlib.suppress(ApiError, OSError):
            me = await self.api.expect("GET", "/v1/drivers/me", "driver", d.driver_id)
            d.status = me["status"]

    async def answer(self, d: SimDriver, offer: dict[str, Any]) -> None:
        """Think a moment, then accept, decline or ignore the offer."""
        think_s = min(self.rng.uniform(3, 12) / self.cfg.speedup, 3.0)
        if not await self.pause(think_s):
            return
        roll = self.rng.random()
        ride_id = offer["ride_id"]
        if roll >= self.cfg.p_accept + self.cfg.p_decline:
            self.state.offers["ignored"] += 1
            return
        verb = "accept" if roll < self.cfg.p_accept else "decline"
        try:
            r = await self.api.call("POST", f"/v1/rides/{ride_id}/{verb}", "driver",
                                    d.driver_id)
        except OSError as e:
            self.state.error(verb, e)
            return
        if r.status_code != 202:
            self.state.offers["too late"] += 1  # it expired while the driver thought
            return
        self.state.offers["accepted" if verb == "accept" else "declined"] += 1
        if verb == "accept":
            await self.trip(d, ride_id, Point(**offer["pickup"]), Point(**offer["dropoff"]))

    async def drive(self, d: SimDriver, to: Point) -> float | None:
        """Drive to ``to``, pinging on the way; the metres driven, or None if stopped."""
        driven = 0.0
        while d.pos != to:
            if not await self.pause(self.cfg.ping_s):
                return None
            before = d.pos
            d.pos = towards(d.pos, to, self.step_m())
            driven += haversine_m(before, d.pos)
            await self.ping(d)
        return driven

    async def trip(self, d: SimDriver, ride_id: str, pickup: Point, dropoff: Point) -> None:
        d.ride_id, d.activity, d.status = ride_id, "to pickup", "reserved"
        try:
            if await self.drive(d, pickup) is None:
                return
            d.activity = "at pickup"
            if not await self.report(d, ride_id, "arrive"):
                return
            if not await self.pause(self.cfg.boarding_s / self.cfg.speedup):
                return
            if not await self.report(d, ride_id, "start"):
                return
            d.activity, d.status = "on trip", "on_trip"
            metres = await self.drive(d, dropoff)
            if metres is None:
                return
            duration_s = round(metres / self.cfg.speed_mps)
            if await self.report(d, ride_id, "complete",
                                 {"distance_m": round(metres), "duration_s": duration_s}):
                self.state.trips.append((round(metres), duration_s))
        finally:
            d.ride_id = None
            if not self.stop.is_set():
                d.activity = "wandering"
                await self.refresh_status(d)

    async def report(self, d: SimDriver, ride_id: str, action: str,
                     body: dict[str, Any] | None = None) -> bool:
        """Report a step; while the API says 409, wait for the ride to catch up — or give
        up if it ended (the rider cancelled) or went to another driver."""
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                r = await self.api.call("POST", f"/v1/rides/{ride_id}/{action}", "driver",
                                        d.driver_id, body)
                if r.status_code == 202:
                    return True
                if r.status_code != 409:
                    raise ApiError(f"{action}: {r.status_code} {r.text[:120]}")
                ride = await self.api.expect("GET", f"/v1/rides/{ride_id}", "driver",
                                             d.driver_id, ok=(200, 404))
                if ride.get("status") in FINAL or ride.get("status") is None or (
                        ride.get("driver_id") not in (None, d.driver_id)):
                    return False
            except (ApiError, OSError) as e:
                self.state.error(action, e)
                return False
            await self.pause(0.2)
        return False

    # --- riders ----------------------------------------------------------------------------

    async def riders(self) -> None:
        """New riders at random, ``rate`` a minute on average."""
        n = 0
        while await self.pause(self.rng.expovariate(self.cfg.rate_per_min / 60.0)):
            n += 1
            self.spawn(self.rider(f"sim{self.run_id}-r{n}"))

    async def rider(self, rider_id: str) -> None:
        pickup, dropoff = self.cfg.city.random_trip(self.rng)
        zone = zone_cell(pickup)
        try:
            quote = await self.api.expect("POST", "/v1/quotes", "rider", rider_id,
                                          {"pickup": coords(pickup), "dropoff": coords(dropoff)})
            self.state.quotes.append((time.monotonic(), zone, float(quote["surge_multiplier"])))
            ride = await self.api.expect("POST", "/v1/rides", "rider", rider_id, {
                "pickup": coords(pickup), "dropoff": coords(dropoff),
                "quote_id": quote["quote_id"]})
        except (ApiError, OSError) as e:
            self.state.error("requesting a ride", e)
            return
        sim = SimRide(ride["ride_id"], rider_id, zone, time.monotonic())
        self.state.rides[sim.ride_id] = sim
        while sim.status not in FINAL and await self.pause(RIDE_POLL_S):
            try:
                seen = await self.api.expect("GET", f"/v1/rides/{sim.ride_id}", "rider",
                                             rider_id)
            except (ApiError, OSError) as e:
                self.state.error("following a ride", e)
                continue
            sim.status = seen["status"]
            sim.surge = seen["fare"]["surge_multiplier"]
            now = time.monotonic()
            if sim.assigned_at is None and seen["driver_id"]:
                sim.assigned_at = now
            if sim.status in FINAL:
                sim.ended_at = now

    # --- the event rate ---------------------------------------------------------------------

    async def sample_rates(self, settings: Settings) -> None:
        """Events a second on RIDES and DRIVERS (from the streams' last sequence), and API
        calls a second, over the last few seconds."""
        from infra.connections import connect_nats

        js = None
        with contextlib.suppress(Exception):
            nc = await asyncio.wait_for(connect_nats(settings, "simulate"), 5)
            js = nc.jetstream()
        window: deque[tuple[float, dict[str, int], int]] = deque(maxlen=6)
        try:
            while True:
                seqs: dict[str, int] = {}
                if js is not None:
                    for stream in ("RIDES", "DRIVERS"):
                        with contextlib.suppress(Exception):
                            seqs[stream] = (await js.stream_info(stream)).state.last_seq
                window.append((time.monotonic(), seqs, self.api.calls))
                t0, first, calls0 = window[0]
                t1, last, calls1 = window[-1]
                if t1 > t0:
                    self.state.event_rates = {s: (last[s] - first[s]) / (t1 - t0)
                                              for s in last if s in first}
                    self.state.api_rate = (calls1 - calls0) / (t1 - t0)
                await asyncio.sleep(1.0)
        finally:
            if js is not None:
                with contextlib.suppress(Exception):
                    await nc.close()

    # --- running ------------------------------------------------------------------------------

    async def run(self, settings: Settings) -> None:
        for i in range(self.cfg.drivers):
            d = SimDriver(f"sim{self.run_id}-d{i}", self.cfg.city.random_point(self.rng))
            self.state.drivers[d.driver_id] = d
            self.spawn(self.driver(d))
        self.spawn(self.riders())
        rates = asyncio.create_task(self.sample_rates(settings))
        try:
            await self.stop.wait()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.wind_down()
        finally:
            rates.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rates

    async def wind_down(self, timeout_s: float = 30.0) -> None:
        """Cancel the rides still open and take the drivers offline, so the city leaves
        nothing waiting behind it."""
        open_rides = [r for r in self.state.rides.values() if r.status not in FINAL]
        self.state.stopping = (f"cancelling {len(open_rides)} open rides, taking "
                               f"{len(self.state.drivers)} drivers offline …")
        sem = asyncio.Semaphore(10)

        async def cancel(r: SimRide) -> None:
            async with sem:
                with contextlib.suppress(ApiError, OSError):
                    resp = await self.api.call("POST", f"/v1/rides/{r.ride_id}/cancel",
                                               "rider", r.rider_id, {"reason": "simulation over"})
                    if resp.status_code == 202:
                        self.cancelled_at_stop += 1
                        r.status = RideStatus.CANCELLED  # what the saga now does

        async def offline(d: SimDriver) -> None:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:  # 409 until the saga has released them
                async with sem:
                    with contextlib.suppress(ApiError, OSError):
                        resp = await self.api.call("POST", "/v1/drivers/me/offline", "driver",
                                                   d.driver_id)
                        if resp.status_code in (200, 404):
                            d.activity, d.status = "offline", "offline"
                            return
                await asyncio.sleep(0.5)

        await asyncio.gather(*(cancel(r) for r in open_rides))
        await asyncio.gather(*(offline(d) for d in self.state.drivers.values()))


async def run_simulation(settings: Settings, cfg: SimConfig, console: Console, *,
                         duration_s: float | None = None,
                         until: Callable[[SimState], bool] | None = None,
                         live: bool = True) -> Summary:
    """Run the city until Ctrl-C, ``duration_s`` or ``until(state)``; returns the summary."""
    api = Api(settings.api_url, settings.require_jwt_secret(), max_connections=4 * cfg.drivers + 50,
              token_ttl_s=min(86400, settings.jwt_max_ttl_s))
    state = SimState()
    stop = asyncio.Event()
    sim = Simulation(api, cfg, state, stop)
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def interrupted() -> None:
        if stop.is_set() and main is not None:
            main.cancel()  # a second Ctrl-C: stop at once
        stop.set()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, interrupted)

    async def watch() -> None:
        deadline = None if duration_s is None else time.monotonic() + duration_s
        while not stop.is_set():
            if (deadline is not None and time.monotonic() >= deadline) or (
                    until is not None and until(state)):
                stop.set()
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    try:
        view = Live(get_renderable=lambda: render(cfg, state), console=console,
                    refresh_per_second=4, transient=False) if live else contextlib.nullcontext()
        with view:
            await sim.run(settings)
    finally:
        watcher.cancel()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        await api.aclose()
    return summarize(state, sim.cancelled_at_stop, api.calls)
