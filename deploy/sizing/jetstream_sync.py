"""What JetStream durability costs, measured on this machine (docs/DEPLOY.md, sizing).

Starts a three-node cluster on free loopback ports from deploy/nats/cluster.conf (ports,
routes and store directories rewritten; everything else as docker-compose.yml runs it),
once with `sync_interval: always` and once without it (the 2-minute default), and
publishes CloudEvent-sized messages with a Nats-Msg-Id to an R1 and an R3 file stream:
one at a time, awaiting each acknowledgement (as the outbox does after a commit), and
with 64 in flight. It also reports how many replicas ridehail's own stream set-up
(events.streams.ensure_streams) leaves on the streams of a cluster, and what that set-up
does to a stream an operator raised to three replicas.

Run from the project root with the project's Python (the dev extra installed):

    python deploy/sizing/jetstream_sync.py

Nothing here is a test: it reports what it saw on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import nats
from nats.js.api import StorageType, StreamConfig

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "nats" / "cluster.conf"
NATS_SERVER = Path(sys.executable).parent / "nats-server"
PAYLOAD = os.urandom(400).hex().encode()  # 800 bytes, about one CloudEvent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    def __init__(self, root: Path, sync_always: bool) -> None:
        self.root = root
        self.sync_always = sync_always
        self.ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{client}" for client, _, _ in self.ports]

    def start(self) -> None:
        routes = "\n    ".join(f"nats-route://127.0.0.1:{c}" for _, _, c in self.ports)
        for i, (client, http, cluster) in enumerate(self.ports, 1):
            conf = CONF.read_text()
            conf = conf.replace("0.0.0.0:4222", f"127.0.0.1:{client}")
            conf = conf.replace("0.0.0.0:8222", f"127.0.0.1:{http}")
            conf = conf.replace("0.0.0.0:6222", f"127.0.0.1:{cluster}")
            conf = conf.replace("/data/jetstream", str(self.root / f"node-{i}"))
            conf = re.sub(r"routes: \[.*?\]", f"routes: [\n    {routes}\n  ]", conf, flags=re.S)
            if not self.sync_always:
                conf = re.sub(r"^\s*sync_interval: always\s*$", "", conf, flags=re.M)
            path = self.root / f"node-{i}.conf"
            path.write_text(conf)
            log = open(self.root / f"node-{i}.log", "wb")
            self.procs.append(subprocess.Popen(
                [str(NATS_SERVER), "-c", str(path)], stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "NATS_SERVER_NAME": f"nats-{i}"}))
            log.close()

    def healthy(self) -> bool:
        for _, http, _ in self.ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=2):
                    pass
            except (urllib.error.URLError, OSError):
                return False
        return True

    async def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(self.healthy):
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not healthy within {timeout:.0f}s; see {self.root}")
            await asyncio.sleep(0.3)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def publish_rates(urls: list[str], replicas: int, one_by_one: int, in_flight: int,
                        total: int) -> tuple[float, float]:
    nc = await nats.connect(urls)
    js = nc.jetstream()
    name = f"SIZING_R{replicas}"
    await js.add_stream(StreamConfig(name=name, subjects=[f"sizing{replicas}.>"],
                                     storage=StorageType.FILE, num_replicas=replicas,
                                     duplicate_window=3600))
    try:
        t0 = time.perf_counter()
        for i in range(one_by_one):
            await js.publish(f"sizing{replicas}.a.{i}", PAYLOAD, headers={"Nats-Msg-Id": f"a{i}"})
        sequential = one_by_one / (time.perf_counter() - t0)

        gate = asyncio.Semaphore(in_flight)

        async def one(i: int) -> None:
            async with gate:
                await js.publish(f"sizing{replicas}.b.{i}", PAYLOAD,
                                 headers={"Nats-Msg-Id": f"b{i}"})

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(total)))
        concurrent = total / (time.perf_counter() - t0)
    finally:
        await js.delete_stream(name)
        await nc.drain()
    return sequential, concurrent


async def ridehail_stream_replicas(urls: list[str]) -> tuple[dict[str, int], int]:
    """Replicas of each stream after ridehail's set-up, and of RIDES after an operator
    raised it to 3 and ridehail's set-up ran again (as at every process start)."""
    sys.path.insert(0, str(ROOT))
    from events.streams import ensure_streams, stream_configs

    nc = await nats.connect(urls)
    js = nc.jetstream()
    try:
        await ensure_streams(js)
        after_setup = {c.name: (await js.stream_info(c.name)).config.num_replicas or 1
                       for c in stream_configs()}
        rides = (await js.stream_info("RIDES")).config
        rides.num_replicas = 3  # what `nats stream edit RIDES --replicas 3` sends
        await js.update_stream(rides)
        await ensure_streams(js)
        after_restart = (await js.stream_info("RIDES")).config.num_replicas or 1
        return after_setup, after_restart
    finally:
        await nc.drain()


async def main(args: argparse.Namespace) -> None:
    print(f"JetStream publish rates, three-node cluster on loopback, {os.cpu_count()} CPUs, "
          f"{len(PAYLOAD)}-byte messages with Nats-Msg-Id; load average "
          f"{os.getloadavg()[0]:.1f} at the start")
    print(f"{'configuration':30s} {'stream':>6s} {'one at a time':>16s} "
          f"{f'{args.in_flight} in flight':>16s}")
    replicas_report: tuple[dict[str, int], int] = ({}, 0)
    for sync_always in (False, True):
        root = Path(tempfile.mkdtemp(prefix="ridehail-jetstream-"))
        cluster = Cluster(root, sync_always)
        try:
            cluster.start()
            await cluster.wait_healthy()
            await asyncio.sleep(2)  # let the meta leader settle
            label = "sync_interval always" if sync_always else "sync_interval default (2m)"
            for replicas in (1, 3):
                seq, conc = await publish_rates(cluster.urls, replicas, args.one_by_one,
                                                args.in_flight, args.total)
                print(f"{label:30s} {f'R{replicas}':>6s} {seq:10.0f} msg/s {conc:10.0f} msg/s")
            if sync_always:
                replicas_report = await ridehail_stream_replicas(cluster.urls)
        finally:
            cluster.stop()
            shutil.rmtree(root, ignore_errors=True)
    after_setup, after_restart = replicas_report
    print(f"replicas after ridehail's stream set-up (events.streams.ensure_streams): "
          f"{after_setup}; RIDES raised to 3 by hand, then set up again: {after_restart}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one-by-one", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--total", type=int, default=8000)
    asyncio.run(main(parser.parse_args()))
