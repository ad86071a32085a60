"""How long `POST /v1/rides` takes while nats-server is frozen (SIGSTOP: the connection
still looks up, nothing answers), measured on this machine.

Starts `ridehail dev` on free ports with a throwaway data dir and a nats-server of its
own, posts rides from a few concurrent riders for a while, freezes nats-server for
``--stall`` seconds, keeps posting, thaws it, and prints the latency percentiles of the
requests answered before and during the stall, and how long the relay took to publish
everything afterwards.

    python deploy/sizing/publish_stall.py --stall 20

Nothing here is a test: it reports what it saw on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
import psutil

from infra.tokens import issue_token
from ridehail.processes.devstack import ridehail_command

RIDE = {"pickup": {"lat": 40.75, "lng": -73.99}, "dropoff": {"lat": 40.76, "lng": -73.97}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def post_rides(api: str, secret: str, until: float, out: list[float], rider: str) -> None:
    token = issue_token(secret, "rider", rider)
    async with httpx.AsyncClient(base_url=api, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        while time.monotonic() < until:
            t0 = time.perf_counter()
            r = await http.post("/v1/rides", json=RIDE)
            if r.status_code != 202:
                raise SystemExit(f"POST /v1/rides answered {r.status_code}: {r.text[:200]}")
            out.append(time.perf_counter() - t0)


async def measure(api: str, secret: str, nats_pid: int, stall: float, riders: int) -> None:
    before: list[float] = []
    during: list[float] = []
    warm = time.monotonic() + 5
    await asyncio.gather(*(post_rides(api, secret, warm, before, f"s{i}")
                           for i in range(riders)))
    os.kill(nats_pid, signal.SIGSTOP)
    try:
        end = time.monotonic() + stall
        await asyncio.gather(*(post_rides(api, secret, end, during, f"s{i}")
                               for i in range(riders)))
    finally:
        os.kill(nats_pid, signal.SIGCONT)
    for name, xs in (("before the stall", before), (f"during a {stall:.0f} s stall", during)):
        print(f"{name:>22}: {len(xs):4d} requests  p50 {pct(xs, 50) * 1000:7.1f} ms  "
              f"p99 {pct(xs, 99) * 1000:7.1f} ms  max {max(xs) * 1000:7.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stall", type=float, default=20.0, help="seconds frozen")
    parser.add_argument("--riders", type=int, default=4, help="concurrent riders")
    args = parser.parse_args()
    data = tempfile.mkdtemp(prefix="ridehail-stall-")
    secret = "stall-" + os.urandom(16).hex()
    nats_port, api_port = free_port(), free_port()
    env = {**os.environ, "RIDEHAIL_DATA_DIR": data, "RIDEHAIL_JWT_SECRET": secret,
           "RIDEHAIL_API_PORT": str(api_port),
           "RIDEHAIL_NATS_URL": f"nats://127.0.0.1:{nats_port}",
           "RIDEHAIL_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
           "RIDEHAIL_TEMPORAL_UI_PORT": str(free_port())}
    dev = subprocess.Popen(ridehail_command("dev"), env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{api_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(api + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or dev.poll() is not None:
                raise SystemExit("ridehail dev did not get ready")
            time.sleep(0.3)
        nats_pid = next(p.pid for p in psutil.process_iter(["name", "cmdline"])
                        if p.info["name"] == "nats-server"
                        and str(nats_port) in (p.info["cmdline"] or []))
        asyncio.run(measure(api, secret, nats_pid, args.stall, args.riders))
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
