"""Measure ride throughput and the memory of each ridehail process (docs/DEPLOY.md, sizing).

Starts everything on free loopback ports, in the shape docker-compose.yml runs it but on
one machine: nats-server with JetStream, a Temporal dev server (in memory), a throwaway
PostgreSQL database brought up with `ridehail db upgrade`, then `ridehail api` (one or
more), `ridehail worker` (one or more), `ridehail consumers` and `ridehail relay`, each a
separate process configured only through RIDEHAIL_* settings. It then drives rides
through the HTTP API only — each ride has its own driver waiting at the pickup, who
accepts, arrives, starts and completes — with a fixed number of rides in flight, samples
each process's resident memory (VmRSS) while idle and under load, and prints a report.
Everything it started is stopped and the database dropped at the end.

Run from the project root with the project's Python (the dev extra installed):

    python deploy/sizing/ride_load.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432 \
        --rides 200 --concurrency 20 --api 2 --workers 2

Nothing here is a test: it reports what it saw on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from ridehail.domain.status import RideStatus
from ridehail.load.apiclient import Api, poll_until

BIN = Path(sys.executable).parent
SEARCH_ATTRIBUTES = ("RideStatus", "RiderId", "DriverId")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    idle_mib: float = 0.0
    peak_mib: float = 0.0
    cpu_before: float = 0.0
    cpu_load: float = 0.0
    samples: list[float] = field(default_factory=list)


class Stack:
    def __init__(self, root: Path, database_url: str, apis: int, workers: int) -> None:
        self.root = root
        self.procs: list[Proc] = []
        self.api_ports = [free_port() for _ in range(apis)]
        self.workers = workers
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
        self.nats_argv = [str(BIN / "nats-server"), "-a", "127.0.0.1", "-p", str(nats_port),
                          "-m", str(self.nats_monitor), "-js", "-sd", str(root / "nats")]
        self.temporal_argv = [
            str(BIN / "temporal"), "server", "start-dev", "--headless",
            "--ip", "127.0.0.1", "--port", str(temporal_port), "--namespace", "default",
            "--log-level", "warn",
        ]
        for name in SEARCH_ATTRIBUTES:
            self.temporal_argv += ["--search-attribute", f"{name}=Keyword"]

    def spawn(self, name: str, argv: list[str], **env: str) -> Proc:
        log = open(self.root / f"{name}.log", "wb")
        popen = subprocess.Popen(argv, env={**self.env, **env}, stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        log.close()
        proc = Proc(name, popen)
        self.procs.append(proc)
        return proc

    async def start(self) -> None:
        self.spawn("nats-server", self.nats_argv)
        self.spawn("temporal-dev-server", self.temporal_argv)
        await wait_port(int(self.env["RIDEHAIL_NATS_URL"].rsplit(":", 1)[1]))
        await wait_port(int(self.env["RIDEHAIL_TEMPORAL_ADDRESS"].rsplit(":", 1)[1]))
        ridehail = str(BIN / "ridehail")
        upgrade = await asyncio.create_subprocess_exec(
            ridehail, "db", "upgrade", env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await upgrade.communicate()
        if upgrade.returncode != 0:
            raise RuntimeError(f"ridehail db upgrade failed: {output.decode()[-2000:]}")
        for i, port in enumerate(self.api_ports, 1):
            self.spawn(f"api-{i}", [ridehail, "api"], RIDEHAIL_API_PORT=str(port))
        for i in range(1, self.workers + 1):
            self.spawn(f"worker-{i}", [ridehail, "worker"])
        self.spawn("consumers", [ridehail, "consumers"])
        self.spawn("relay", [ridehail, "relay"])
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
        # ridehail components first (SIGTERM: graceful), then the servers
        for p in reversed(self.procs):
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
                try:
                    p.popen.wait(30)
                except subprocess.TimeoutExpired:
                    p.popen.kill()
                    p.popen.wait()


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

    async def run(self, rides: int, concurrency: int) -> float:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with gate:
                try:
                    await self.ride(i)
                except Exception as e:  # noqa: BLE001 — counted and reported
                    self.failures.append(f"ride {i}: {type(e).__name__}: {e}")

        t0 = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(rides)))
        return time.monotonic() - t0


def create_database(admin_url: str) -> tuple[str, str]:
    name = f"ridehail_sizing_{secrets.token_hex(4)}"
    dsn = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"{admin_url}/{name}"


def drop_database(admin_url: str, name: str) -> None:
    dsn = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="ridehail-sizing-"))
    db_name, database_url = create_database(args.postgres)
    stack = Stack(root, database_url, args.api, args.workers)
    try:
        await stack.start()
        await asyncio.sleep(args.settle)
        stack.sample()
        for p in stack.procs:
            p.idle_mib = p.samples[-1]
            p.cpu_before = cpu_seconds(p.popen.pid)

        async def sampler() -> None:
            while True:
                stack.sample()
                await asyncio.sleep(0.5)

        sampling = asyncio.create_task(sampler())
        apis = [Api(f"http://127.0.0.1:{p}", stack.secret,
                    max_connections=args.concurrency * 2) for p in stack.api_ports]
        load = Load(apis, args.ride_timeout, args.poll)
        try:
            elapsed = await load.run(args.rides, args.concurrency)
        finally:
            for api in apis:
                await api.aclose()
        sampling.cancel()
        stack.check_alive()
        for p in stack.procs:
            p.cpu_load = cpu_seconds(p.popen.pid) - p.cpu_before

        done = len(load.durations)
        print(f"\nridehail sizing run: {args.rides} rides, {args.concurrency} in flight, "
              f"{args.api} api / {args.workers} worker / 1 consumers / 1 relay process(es), "
              f"PostgreSQL, one nats-server, Temporal dev server; {os.cpu_count()} CPUs")
        print(f"completed {done}/{args.rides} rides in {elapsed:.1f}s: "
              f"{done / elapsed:.2f} rides/s end to end "
              f"({load.calls} HTTP calls, {load.calls / elapsed:.0f}/s incl. polling)")
        if load.durations:
            print(f"ride request -> completed: median {statistics.median(load.durations):.2f}s, "
                  f"p95 {pct(load.durations, 0.95):.2f}s")
            latencies = load.request_latencies
            print(f"POST /v1/rides latency: median {1000 * statistics.median(latencies):.0f} ms, "
                  f"p95 {1000 * pct(latencies, 0.95):.0f} ms")
        per_ride = {name: round(n / max(done, 1), 1)
                    for name, n in sorted((await stack.stream_messages()).items())}
        print(f"JetStream messages per ride: {per_ride}")
        for failure in load.failures[:10]:
            print("  failed:", failure)
        print(f"\n{'process':22s} {'RSS idle MiB':>13s} {'RSS peak MiB':>13s} "
              f"{'CPU s':>7s} {'CPU ms/ride':>12s}")
        for p in stack.procs:
            per_ride = 1000 * p.cpu_load / done if done else float("nan")
            print(f"{p.name:22s} {p.idle_mib:13.0f} {p.peak_mib:13.0f} "
                  f"{p.cpu_load:7.1f} {per_ride:12.0f}")
        total = sum(p.cpu_load for p in stack.procs)
        print(f"all processes used {total:.1f} CPU-seconds over {elapsed:.1f}s "
              f"({total / elapsed:.2f} of {os.cpu_count()} CPUs); "
              f"load average at the end {os.getloadavg()[0]:.1f}")
        return 0 if not load.failures else 1
    finally:
        stack.stop()
        drop_database(args.postgres, db_name)
        if args.keep_logs:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", required=True,
                        help="server URL without a database, e.g. "
                             "postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--rides", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--api", type=int, default=1, help="API processes")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--ride-timeout", type=float, default=120)
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between polls")
    parser.add_argument("--settle", type=float, default=5, help="idle seconds before load")
    parser.add_argument("--keep-logs", action="store_true")
    return asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
