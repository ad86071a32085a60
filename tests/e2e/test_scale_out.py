"""Scale-out: two of every component as separate processes against one Temporal server,
one nats-server and one database; one of each is killed with SIGKILL midway, and every
ride still completes exactly once with the invariants intact."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from api.auth import issue_token
from domain.status import RideStatus
from infra.config import Settings
from ridehail.ops.audit import run_audit
from ridehail.processes.components import runtime
from ridehail.processes.serverprocess import answering
from store.tables import LedgerEntry
from tests.conftest import POSTGRES_URL
from tests.support.ridestream import ride_history
from tests.support.servers import free_port
from tests.support.stack import eventually, reset_streams, terminate_running

RIDEHAIL = str(Path(sys.executable).parent / "ridehail")
COMPONENTS = ("api", "worker", "consumers", "relay")
RIDES = 30
DRIVERS = 8

# (method, path, role, sub, **httpx options) → the response of whichever API answered
Call = Callable[..., Awaitable[httpx.Response]]


def env_for(settings: Settings, api_port: int | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIDEHAIL_")}
    env.update(
        RIDEHAIL_DATA_DIR=str(settings.data_dir),
        RIDEHAIL_DATABASE_URL=settings.db_url,
        RIDEHAIL_NATS_URL=settings.nats_url,
        RIDEHAIL_TEMPORAL_ADDRESS=settings.temporal_address,
        RIDEHAIL_JWT_SECRET=settings.require_jwt_secret(),
        RIDEHAIL_OFFER_TIMEOUT_S="10",
        RIDEHAIL_MATCHING_DEADLINE_S="120",
        PYTHONUNBUFFERED="1",
    )
    if api_port:
        env["RIDEHAIL_API_PORT"] = str(api_port)
    return env


@contextmanager
def processes(settings: Settings, logs: Path) -> Iterator[dict[str, list]]:
    """Two processes of each component; yields {component: [(Popen, api_port), …]}."""
    started: dict[str, list] = {c: [] for c in COMPONENTS}
    try:
        for component, n in itertools.product(COMPONENTS, (1, 2)):
            port = free_port() if component == "api" else None
            log = open(logs / f"{component}-{n}.log", "wb")
            proc = subprocess.Popen([RIDEHAIL, component], env=env_for(settings, port),
                                    stdout=log, stderr=subprocess.STDOUT)
            log.close()
            started[component].append((proc, port))
        yield started
    finally:
        for proc, _ in itertools.chain(*started.values()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in itertools.chain(*started.values()):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def scale_settings(settings: Settings) -> Settings:
    """PostgreSQL where CI provides it (the production shape); SQLite otherwise."""
    if POSTGRES_URL and not settings.db_url.startswith("postgresql"):
        pytest.skip("runs once, on PostgreSQL")
    return settings


async def test_two_of_everything_survive_losing_one_of_each(
    scale_settings: Settings, tmp_path: Path
) -> None:
    settings = scale_settings
    await reset_streams(settings)
    async with runtime(settings, "scale-test"):  # streams and schema, once
        pass
    with processes(settings, tmp_path) as procs:
        ports = [port for _, port in procs["api"]]
        await eventually(lambda: _all_listening(ports), "both APIs to listen", timeout=60)
        live_ports = list(ports)
        call = _through_any_api(settings, live_ports)
        drivers = await _drivers_online(call)

        stop_driving = asyncio.Event()
        driving = [asyncio.create_task(_drive(call, d, stop_driving)) for d in drivers]
        ride_ids = await _request_rides_killing_one_of_each(call, procs, live_ports)
        try:
            await eventually(lambda: _all_completed(call, ride_ids), "every ride to complete",
                             timeout=240, interval=1)
        finally:
            stop_driving.set()
            await asyncio.gather(*driving, return_exceptions=True)

        await _check_each_ride_completed_and_paid_once(settings, ride_ids)
        _check_the_survivors_stop_gracefully(procs, tmp_path)


def _through_any_api(settings: Settings, live_ports: list[int | None]) -> Call:
    """A call to the API as ``role`` ``sub``, through whichever of ``live_ports`` answers
    (read at each call: a killed API's port is taken out), as a load balancer would."""
    async def call(method: str, path: str, role: str, sub: str, **kw) -> httpx.Response:  # type: ignore[no-untyped-def]
        token = issue_token(settings.require_jwt_secret(), role, sub)  # type: ignore[arg-type]
        last: Exception | None = None
        for port in itertools.islice(itertools.cycle(list(live_ports)), 4):
            try:
                async with httpx.AsyncClient(timeout=20) as c:
                    return await c.request(method, f"http://127.0.0.1:{port}{path}",
                                           headers={"Authorization": f"Bearer {token}"},
                                           **kw)
            except httpx.TransportError as e:
                last = e
        raise AssertionError(f"no API answered {method} {path}: {last}")

    return call


async def _drivers_online(call: Call) -> list[str]:
    drivers = [f"d{i}" for i in range(DRIVERS)]
    for i, d in enumerate(drivers):
        r = await call("PUT", "/v1/drivers/me", "driver", d, json={
            "name": d, "vehicle": {"make": "Kia", "model": "Niro", "plate": d}})
        assert r.status_code == 200, r.text
        r = await call("POST", "/v1/drivers/me/online", "driver", d,
                       json={"lat": 40.75 + i * 0.0005, "lng": -73.99})
        assert r.status_code == 200, r.text
    return drivers


async def _request_rides_killing_one_of_each(call: Call, procs: dict[str, list],
                                             live_ports: list[int | None]) -> list[str]:
    """Request the rides one by one; a third of the way, SIGKILL the first process of
    each component (its API port is no longer called)."""
    ride_ids: list[str] = []
    killed = False
    for n in range(RIDES):
        if n == RIDES // 3 and not killed:
            for component in COMPONENTS:
                proc, port = procs[component][0]
                proc.send_signal(signal.SIGKILL)
                if port in live_ports:
                    live_ports.remove(port)
            killed = True
        rider = f"r{n}"
        r = await call("POST", "/v1/rides", "rider", rider, json={
            "pickup": {"lat": 40.7502, "lng": -73.9902},
            "dropoff": {"lat": 40.76, "lng": -73.97}})
        assert r.status_code == 202, r.text
        ride_ids.append(r.json()["ride_id"])
        await asyncio.sleep(0.1)
    return ride_ids


async def _all_completed(call: Call, ride_ids: list[str]) -> bool:
    for i, ride_id in enumerate(ride_ids):
        r = await call("GET", f"/v1/rides/{ride_id}", "rider", f"r{i}")
        if r.json()["status"] != RideStatus.COMPLETED:
            return False
    return True


async def _check_each_ride_completed_and_paid_once(settings: Settings,
                                                   ride_ids: list[str]) -> None:
    async with runtime(settings, "scale-check", prepare=False) as rt:
        for ride_id in ride_ids:
            types = [e.type for _, e in await ride_history(rt.js, ride_id)]
            assert types.count("ride.completed") == 1, (ride_id, types)
            assert types.count("ride.payment_captured") == 1, (ride_id, types)
        captures = await rt.db.read(lambda s: list(s.exec(
            select(LedgerEntry.ride_id).where(LedgerEntry.kind == "capture"))))
        assert sorted(captures) == sorted(ride_ids)
        assert rt.temporal is not None
        report = await run_audit(rt.db, rt.js, rt.temporal)
        assert report.ok, report.as_dict()
        await terminate_running(rt.temporal)


def _check_the_survivors_stop_gracefully(procs: dict[str, list], tmp_path: Path) -> None:
    """The survivors stop gracefully on SIGTERM, each within its drain time."""
    survivors = [procs[c][1][0] for c in COMPONENTS]
    for proc in survivors:
        proc.send_signal(signal.SIGTERM)
    for component, proc in zip(COMPONENTS, survivors, strict=True):
        assert proc.wait(30) == 0, (component, (tmp_path / f"{component}-2.log").read_text())


async def _all_listening(ports: list[int | None]) -> bool:
    return all(p and answering("127.0.0.1", p) for p in ports)


async def _drive(call, driver: str, stop: asyncio.Event) -> None:  # type: ignore[no-untyped-def]
    """A driver app: accept every offer, then arrive, start and complete the trip."""
    steps = (("accept", "driver_assigned"), ("arrive", "driver_arrived"),
             ("start", "in_progress"))
    while not stop.is_set():
        try:
            offers = (await call("GET", "/v1/drivers/me/offers", "driver", driver)).json()
            if not offers:
                await asyncio.sleep(0.2)
                continue
            ride_id = offers[0]["ride_id"]
            for action, reached in steps:
                r = await call("POST", f"/v1/rides/{ride_id}/{action}", "driver", driver)
                if r.status_code != 202 and not await _got_there(call, driver, ride_id,
                                                                 reached):
                    break  # the offer expired or the ride moved on: look for the next
                await _until_status(call, driver, ride_id, reached, stop)
            else:
                await call("POST", f"/v1/rides/{ride_id}/complete", "driver", driver,
                           json={"distance_m": 2400, "duration_s": 420})
        except (AssertionError, httpx.HTTPError, ValueError):
            await asyncio.sleep(0.5)


async def _got_there(call, driver: str, ride_id: str, status: str) -> bool:  # type: ignore[no-untyped-def]
    """After a refused step: whether an earlier try of it went through after all. A call
    in flight to the API that is killed can commit and lose its answer; its retry on the
    other API is then refused (409), and a driver app that gave up the ride there would
    strand it. The ride is this driver's and at (or reaching) the step's status if so."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = await call("GET", f"/v1/rides/{ride_id}", "driver", driver)
        if r.status_code != 200:
            return False
        ride = r.json()
        if ride["status"] == status:
            return True
        if ride.get("driver_id") not in (None, driver):
            return False  # someone else's now
        await asyncio.sleep(0.2)
    return False


async def _until_status(call, driver: str, ride_id: str, status: str,  # type: ignore[no-untyped-def]
                        stop: asyncio.Event) -> None:
    while not stop.is_set():
        r = await call("GET", f"/v1/rides/{ride_id}", "driver", driver)
        if r.status_code == 200 and r.json()["status"] == status:
            return
        await asyncio.sleep(0.1)
