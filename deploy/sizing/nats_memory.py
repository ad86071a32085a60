"""What nats-server keeps in memory for the messages of ridehail's streams (docs/DEPLOY.md,
sizing).

Starts a nats-server of its own for each case (JetStream, a temporary store, a free
loopback port), creates ``RIDES`` exactly as ridehail does (events.streams: file storage,
limits retention, a day's age limit, the 5-minute duplicate window, the partitioning
transform), publishes ``--messages`` CloudEvent-sized messages (800 bytes) 64 at a time,
and reports the server's resident memory before and after, and again after ``--idle``
seconds without traffic. The cases tell the parts apart:

- ``ridehail``: every message on a subject of its own (``rides.<ride id>.<event>``) with
  a ``Nats-Msg-Id`` — what the outbox publishes;
- ``subjects``: subjects of their own, no message id;
- ``ids``: one subject, a message id each;
- ``neither``: one subject, no message id — the file store's write cache alone.

Run from the project root with the project's Python (the dev extra installed):

    python deploy/sizing/nats_memory.py --messages 120000

Nothing here is a test: it reports what it saw on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
from sizing_figures import rss_mib

from events.streams import stream_configs
from ridehail.processes.serverprocess import ServerProcess, binary, free_port

PAYLOAD = b"e" * 800  # about one CloudEvent
IN_FLIGHT = 64
EVENTS = ("requested", "priced", "driver_offered", "driver_assigned", "trip_started")
CASES = {  # name: (a subject of its own per message, a message id per message)
    "ridehail": (True, True),
    "subjects": (True, False),
    "ids": (False, True),
    "neither": (False, False),
}


@contextlib.asynccontextmanager
async def nats_server() -> AsyncIterator[tuple[int, str]]:
    """A nats-server with JetStream on a free loopback port and a temporary store: its
    PID and URL, once it answers."""
    port = free_port()
    with tempfile.TemporaryDirectory() as store:
        argv = [binary("nats-server"), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store]
        server = ServerProcess("nats-server", argv, Path(store) / "nats.log", "127.0.0.1", port)
        server.start()
        try:
            await server.wait_ready()
            assert server.proc is not None
            yield server.proc.pid, f"nats://127.0.0.1:{port}"
        finally:
            server.stop()


async def measure(case: str, messages: int, idle_s: float) -> dict[str, float]:
    own_subjects, with_ids = CASES[case]
    async with nats_server() as (pid, url):
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            await js.add_stream(next(c for c in stream_configs() if c.name == "RIDES"))
            await asyncio.sleep(1)
            before = rss_mib(pid)
            one_ride = f"rides.{uuid.uuid4().hex}.x"
            for start in range(0, messages, IN_FLIGHT):
                batch = []
                for i in range(start, min(start + IN_FLIGHT, messages)):
                    subject = (f"rides.{uuid.uuid4().hex}.{EVENTS[i % len(EVENTS)]}"
                               if own_subjects else one_ride)
                    headers = {"Nats-Msg-Id": uuid.uuid4().hex} if with_ids else None
                    batch.append(js.publish(subject, PAYLOAD, headers=headers))
                await asyncio.gather(*batch)
            after = rss_mib(pid)
        finally:
            await nc.close()
        await asyncio.sleep(idle_s)
        idle = rss_mib(pid)
    return {"before_mib": before, "after_mib": after, "idle_mib": idle,
            "bytes_per_message": (idle - before) * 1024 * 1024 / messages}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=120_000)
    parser.add_argument("--idle", type=float, default=20.0,
                        help="seconds without traffic before the last reading")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated, of {', '.join(CASES)}")
    args = parser.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}; the cases are {', '.join(CASES)}")
    print(f"{args.messages} messages of {len(PAYLOAD)} bytes to RIDES, {IN_FLIGHT} in flight")
    print(f"{'case':10s} {'RSS before':>10s} {'after':>8s} {'idle':>8s} {'bytes/message':>14s}")
    for case in cases:
        r = await measure(case, args.messages, args.idle)
        print(f"{case:10s} {r['before_mib']:8.0f} MiB {r['after_mib']:4.0f} MiB "
              f"{r['idle_mib']:4.0f} MiB {r['bytes_per_message']:14.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
