"""The production shape on one machine and the rides that load it, for the sizing scripts
beside this file (ride_load.py, scale_curve.py).

``running_stack`` creates a throwaway PostgreSQL database, starts nats-server with
JetStream, a Temporal dev server (in memory) and any number of processes of each ridehail
component (``api``, ``worker``, ``consumers``, ``relay``) on free loopback ports, each
configured only through RIDEHAIL_* settings, and on the way out stops all of them and
drops the database. ``Load`` drives rides through the HTTP API only, round-robin over the
API processes: each ride has its own driver waiting at the pickup, who accepts, arrives,
starts and completes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from sizing_figures import rss_mib

from domain.status import RideStatus
from ridehail.healthcheck import COMPONENTS as KINDS  # api, worker, consumers, relay
from ridehail.load.apiclient import Api, poll_until
from ridehail.processes.devservers import SEARCH_ATTRIBUTES
from ridehail.processes.serverprocess import binary, die_with_parent, free_port, terminate

STOP_TIMEOUT_S = 30.0


@dataclass
class Proc:
    name: str
    kind: str  # api, worker, consumers, relay, nats-server, temporal
    popen: subprocess.Popen[bytes]
    idle_mib: float = 0.0
    peak_mib: float = 0.0
    cpu_before: float = 0.0
    cpu_load: float = 0.0
    samples: list[float] = field(default_factory=list)


class Stack:
    """``counts``: how many processes of each ridehail component (KINDS) to run."""

    def __init__(self, root: Path, database_url: str, counts: Mapping[str, int]) -> None:
        self.root = root
        self.procs: list[Proc] = []
        self.counts = {kind: counts.get(kind, 1) for kind in KINDS}
        self.api_ports = [free_port() for _ in range(self.counts["api"])]
        nats_port, temporal_port = free_port(), free_port()
        self.nats_monitor = free_port()
        self.secret = secrets.token_urlsafe(32)
        self.env = {
            **os.environ,
            "RIDEHAIL_DATA_DIR": str(root / "data"),
            "RIDEHAIL_DATABASE_URL": database_url,
            "RIDEHAIL_NATS_URL": f"nats://127.0.0.1:{nats_port}",
            "RIDEHAIL_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
            "RIDEHAIL_TEMPORAL_NAMESPACE": "default",
            "RIDEHAIL_JWT_SECRET": self.secret,
            "RIDEHAIL_API_HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
        }
        self.nats_argv = [binary("nats-server"), "-a", "127.0.0.1", "-p", str(nats_port),
                          "-m", str(self.nats_monitor), "-js", "-sd", str(root / "nats")]
        self.temporal_argv = [
            binary("temporal"), "server", "start-dev", "--headless",
            "--ip", "127.0.0.1", "--port", str(temporal_port), "--namespace", "default",
            "--log-level", "warn",
        ]
        for name in SEARCH_ATTRIBUTES:
            self.temporal_argv += ["--search-attribute", f"{name}=Keyword"]

    def spawn(self, name: str, kind: str, argv: list[str], **env: str) -> Proc:
        log = open(self.root / f"{name}.log", "wb")
        popen = subprocess.Popen(argv, env={**self.env, **env}, stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True,  # Ctrl-C reaches us; we stop them
                                 preexec_fn=die_with_parent)  # and if we are killed
        log.close()
        proc = Proc(name, kind, popen)
        self.procs.append(proc)
        return proc

    async def start(self) -> None:
        self.spawn("nats-server", "nats-server", self.nats_argv)
        self.spawn("temporal-dev-server", "temporal", self.temporal_argv)
        await wait_port(int(self.env["RIDEHAIL_NATS_URL"].rsplit(":", 1)[1]))
        await wait_port(int(self.env["RIDEHAIL_TEMPORAL_ADDRESS"].rsplit(":", 1)[1]))
        ridehail = binary("ridehail")
        upgrade = await asyncio.create_subprocess_exec(
            ridehail, "db", "upgrade", env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await upgrade.communicate()
        if upgrade.returncode != 0:
            raise RuntimeError(f"ridehail db upgrade failed: {output.decode()[-2000:]}")
        for kind in KINDS:
            for i in range(1, self.counts[kind] + 1):
                port = {"RIDEHAIL_API_PORT": str(self.api_ports[i - 1])} if kind == "api" else {}
                self.spawn(f"{kind}-{i}", kind, [ridehail, kind], **port)
        async with httpx.AsyncClient() as http:
            for port in self.api_ports:
                await wait_ready(http, f"http://127.0.0.1:{port}", self)

    def check_alive(self) -> None:
        for p in self.procs:
            if p.popen.poll() is not None:
                log = (self.root / f"{p.name}.log").read_text(errors="replace")
                raise RuntimeError(f"{p.name} exited with {p.popen.returncode}:\n{log[-2000:]}")

    def sample(self) -> None:
        for p in self.procs:
            mib = rss_mib(p.popen.pid)
            p.samples.append(mib)
            p.peak_mib = max(p.peak_mib, mib)

    async def stream_messages(self) -> dict[str, int]:
        async with httpx.AsyncClient() as http:
            r = await http.get(f"http://127.0.0.1:{self.nats_monitor}/jsz?streams=true")
        details = r.json().get("account_details", [])
        return {s["name"]: s["state"]["messages"]
                for account in details for s in account.get("stream_detail", [])}

    def stop(self) -> None:
        """ridehail's components first (SIGTERM: graceful), then the servers; a second
        Ctrl-C meanwhile is ignored, so that none is left running."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for p in reversed(self.procs):
                terminate(p.popen, p.name, STOP_TIMEOUT_S)
        finally:
            signal.signal(signal.SIGINT, previous)


async def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        writer.close()
        return
    raise RuntimeError(f"nothing answered on port {port} within {timeout:.0f}s")


async def wait_ready(http: httpx.AsyncClient, base: str, stack: Stack,
                     timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            if (await http.get(base + "/readyz", timeout=5)).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.3)
    raise RuntimeError(f"{base}/readyz did not answer 200 within {timeout:.0f}s")


class Load:
    """Rides driven through the HTTP API, round-robin over the API processes."""

    def __init__(self, apis: list[Api], ride_timeout: float, poll_s: float) -> None:
        self.apis = apis
        self.ride_timeout = ride_timeout
        self.poll_s = poll_s
        self.durations: list[float] = []
        self.request_latencies: list[float] = []
        self.failures: list[str] = []

    @property
    def calls(self) -> int:
        return sum(api.calls for api in self.apis)

    async def ride(self, i: int) -> None:
        # each ride has its own driver, waiting at the pickup; pickups are ~5 km apart so
        # the nearest available driver is always the ride's own
        lat, lng = 40.0 + (i // 40) * 0.05, -75.0 + (i % 40) * 0.05
        api = self.apis[i % len(self.apis)]
        driver, rider = ("driver", f"load-d{i}"), ("rider", f"load-r{i}")
        deadline = time.monotonic() + self.ride_timeout

        async def until(what: str, check: Callable[[], Awaitable[bool]]) -> None:
            await poll_until(check, what, deadline, self.poll_s)

        await api.expect("PUT", "/v1/drivers/me", *driver,
                         {"name": f"Driver {i}", "vehicle": {"make": "Kia", "model": "Niro",
                                                             "plate": f"LD-{i}"}})
        await api.expect("POST", "/v1/drivers/me/online", *driver, {"lat": lat, "lng": lng})

        async def available() -> bool:
            me = await api.expect("GET", "/v1/drivers/me", *driver)
            return bool(me.get("status") == "available")

        await until("driver available", available)
        t0 = time.monotonic()
        ride = await api.expect("POST", "/v1/rides", *rider,
                                {"pickup": {"lat": lat, "lng": lng},
                                 "dropoff": {"lat": lat + 0.01, "lng": lng + 0.015}})
        self.request_latencies.append(time.monotonic() - t0)
        ride_id = ride["ride_id"]

        async def offered() -> bool:
            body = await api.expect("GET", "/v1/drivers/me/offers", *driver)
            items = body if isinstance(body, list) else body.get("offers", [])
            return any(o.get("ride_id") == ride_id for o in items)

        await until("offer", offered)
        steps = (("accept", RideStatus.DRIVER_ASSIGNED, None),
                 ("arrive", RideStatus.DRIVER_ARRIVED, None),
                 ("start", RideStatus.IN_PROGRESS, None),
                 ("complete", RideStatus.COMPLETED, {"distance_m": 2300, "duration_s": 540}))
        for action, then, body in steps:
            async def act(action: str = action, body: object = body) -> bool:
                # 409 while the read model has not caught up with the previous step
                r = await api.call("POST", f"/v1/rides/{ride_id}/{action}", *driver, body)
                if r.status_code not in (202, 409):
                    raise RuntimeError(f"{action} -> {r.status_code}: {r.text[:200]}")
                return r.status_code == 202

            async def reached(then: str = then) -> bool:
                got = await api.expect("GET", f"/v1/rides/{ride_id}", *rider)
                return bool(got["status"] == then)

            await until(action, act)
            await until(then, reached)
        self.durations.append(time.monotonic() - t0)

    async def run(self, rides: int, concurrency: int, first: int = 0) -> float:
        """Rides ``first`` .. ``first + rides - 1`` (each number its own rider, driver
        and pickup), ``concurrency`` at a time; returns the seconds they took."""
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with gate:
                try:
                    await self.ride(i)
                except Exception as e:  # noqa: BLE001 — counted and reported
                    self.failures.append(f"ride {i}: {type(e).__name__}: {e}")

        t0 = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(first, first + rides)))
        return time.monotonic() - t0


def admin_dsn(admin_url: str) -> str:
    """psycopg's DSN for the server's ``postgres`` database, from the SQLAlchemy URL."""
    return admin_url.replace("postgresql+psycopg://", "postgresql://") + "/postgres"


def create_database(admin_url: str) -> tuple[str, str]:
    name = f"ridehail_sizing_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"{admin_url}/{name}"


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_dsn(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def api_clients(stack: Stack, concurrency: int) -> list[Api]:
    """One client per API process, each with room for every ride in flight."""
    return [Api(f"http://127.0.0.1:{p}", stack.secret, max_connections=concurrency * 2)
            for p in stack.api_ports]


@contextlib.asynccontextmanager
async def running_stack(postgres: str, counts: Mapping[str, int], keep_logs: bool = False
                        ) -> AsyncIterator[tuple[Stack, str]]:
    """A started stack on a new database (yields it and the database's name); on the way
    out, Ctrl-C and errors included, every process stopped and the database dropped."""
    root = Path(tempfile.mkdtemp(prefix="ridehail-sizing-"))
    db_name, database_url = create_database(postgres)
    stack: Stack | None = None
    try:
        stack = Stack(root, database_url, counts)
        await stack.start()
        yield stack, db_name
    finally:
        if stack is not None:
            stack.stop()
        drop_database(postgres, db_name)
        if keep_logs:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def parser_for(doc: str, rides: int) -> argparse.ArgumentParser:
    """The options every sizing script over this stack takes: the PostgreSQL server, the
    rides and how they run, the idle time before them, whether to keep the logs."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--postgres", required=True,
                        help="server URL without a database, e.g. "
                             "postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--rides", type=int, default=rides, help="measured rides (per run)")
    parser.add_argument("--concurrency", type=int, default=20, help="rides in flight")
    parser.add_argument("--ride-timeout", type=float, default=120)
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between polls")
    parser.add_argument("--settle", type=float, default=5, help="idle seconds before load")
    parser.add_argument("--keep-logs", action="store_true")
    return parser
