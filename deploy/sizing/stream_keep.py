"""What bounds nats-server's memory when ridehail's streams keep an event for a window
(docs/DEPLOY.md, sizing: "nats-server memory: the rides of the window").

Starts a nats-server of its own for each case (JetStream, a temporary store, a free
loopback port) and publishes rides to ``RIDES`` at a steady rate: ``--events`` messages a
ride (800 bytes, about one CloudEvent), each on a subject of its own with a
``Nats-Msg-Id``, as the outbox publishes them. Every ``--sample`` seconds it reads the
server's resident memory and CPU time and the stream's state. The cases are the ways a
stream can stop growing with every ride ever booked:

- ``unbounded``: ``RIDES`` as ridehail 0.2 created it (no age limit, a one-hour
  duplicate window) — the baseline;
- ``max_age``: ``RIDES`` as ridehail declares it now (events.streams) with
  ``--window`` as ``RIDEHAIL_STREAM_KEEP_S``: the server deletes what is older;
- ``purge``: no age limit, and each ride's subjects purged ``--window`` seconds after
  its events, as a sweeper would once the ride ended and every durable acknowledged it.

Run from the project root with the project's Python (the dev extra installed):

    python deploy/sizing/stream_keep.py --rides-per-s 100 --window 60 --duration 240

Nothing here is a test: it reports what it saw on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats_memory import nats_server
from sizing_figures import cpu_seconds, rss_mib

from events.streams import stream_configs

PAYLOAD = b"e" * 800
IN_FLIGHT = 64
CASES = ("unbounded", "max_age", "purge")


@dataclass
class Sample:
    t: float
    rss_mib: float
    cpu_s: float
    messages: int
    subjects: int
    deleted: int
    mib_stored: float


def rides_stream(case: str, window_s: float) -> StreamConfig:
    """``RIDES`` as the case creates it."""
    declared = next(c for c in stream_configs(keep_s=window_s) if c.name == "RIDES")
    if case == "unbounded":
        return dataclasses.replace(declared, max_age=0, duplicate_window=3600)
    if case == "purge":
        return dataclasses.replace(declared, max_age=0)
    return declared


async def sample(nc: NATS, pid: int, start: float) -> Sample:
    """The server's memory and CPU and the stream's state (num_subjects, which nats-py's
    StreamInfo leaves out, from the API's own answer)."""
    reply = await nc.request("$JS.API.STREAM.INFO.RIDES", b"", timeout=10)
    state = json.loads(reply.data)["state"]
    return Sample(time.monotonic() - start, rss_mib(pid), cpu_seconds(pid),
                  state.get("messages", 0), state.get("num_subjects", 0),
                  state.get("num_deleted", 0), state.get("bytes", 0) / 2**20)


async def publish_ride(js: JetStreamContext, events: int) -> str:
    ride = uuid.uuid4().hex
    for first in range(0, events, IN_FLIGHT):
        await asyncio.gather(*(
            js.publish(f"rides.{ride}.e{i}", PAYLOAD, headers={"Nats-Msg-Id": uuid.uuid4().hex})
            for i in range(first, min(first + IN_FLIGHT, events))))
    return ride


async def drive(nc: NATS, pid: int, case: str, args: argparse.Namespace) -> list[Sample]:
    """Publish ``--rides-per-s`` rides a second for ``--duration`` seconds; in the purge
    case, purge each ride's subjects once it is ``--window`` old."""
    js = nc.jetstream()
    start = time.monotonic()
    samples = [await sample(nc, pid, start)]
    kept: collections.deque[tuple[float, str]] = collections.deque()
    tick = 0
    while (now := time.monotonic() - start) < args.duration:
        rides = await asyncio.gather(*(publish_ride(js, args.events)
                                       for _ in range(args.rides_per_s)))
        kept.extend((now, r) for r in rides)
        while case == "purge" and kept and kept[0][0] <= now - args.window:
            await js.purge_stream("RIDES", subject=f"rides.*.{kept.popleft()[1]}.>")
        tick += 1
        if tick % args.sample == 0:
            samples.append(await sample(nc, pid, start))
        await asyncio.sleep(max(0.0, tick - (time.monotonic() - start)))
    samples.append(await sample(nc, pid, start))
    return samples


async def measure(case: str, args: argparse.Namespace) -> list[Sample]:
    async with nats_server() as (pid, url):
        nc = await nats.connect(url)
        try:
            await nc.jetstream().add_stream(rides_stream(case, args.window))
            await asyncio.sleep(1)
            return await drive(nc, pid, case, args)
        finally:
            await nc.close()


def summary(case: str, samples: list[Sample], args: argparse.Namespace) -> str:
    first, end = samples[0], samples[-1]
    half = min(samples, key=lambda s: abs(s.t - end.t / 2))
    rides = args.rides_per_s * end.t
    growth = (end.rss_mib - half.rss_mib) / half.rss_mib * 100
    return (f"{case:10s} {first.rss_mib:5.0f} {half.rss_mib:6.0f} {end.rss_mib:6.0f} MiB "
            f"{growth:+6.1f}% {end.messages:9d} {end.subjects:9d} {end.deleted:8d} "
            f"{end.mib_stored:7.0f} MiB {(end.cpu_s - first.cpu_s) * 1000 / rides:6.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rides-per-s", type=int, default=100)
    parser.add_argument("--events", type=int, default=11, help="RIDES messages a ride")
    parser.add_argument("--window", type=float, default=60.0, help="seconds kept")
    parser.add_argument("--duration", type=float, default=240.0)
    parser.add_argument("--sample", type=int, default=10, help="seconds between samples")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--json", type=Path, help="write every sample here")
    args = parser.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    print(f"{args.rides_per_s} rides/s × {args.events} events of {len(PAYLOAD)} bytes to "
          f"RIDES for {args.duration:.0f} s; window {args.window:.0f} s")
    print(f"{'case':10s} {'RSS':>5s} {'half':>6s} {'end':>6s}     {'2nd half':>7s} "
          f"{'messages':>9s} {'subjects':>9s} {'deleted':>8s} {'stored':>11s} {'CPU/ride':>9s}")
    every: dict[str, list[dict[str, float]]] = {}
    for case in cases:
        samples = asyncio.run(measure(case, args))
        every[case] = [dataclasses.asdict(s) for s in samples]
        print(summary(case, samples, args), flush=True)
    if args.json:
        args.json.write_text(json.dumps(every, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
