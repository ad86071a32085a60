"""Measure ride throughput and the memory of each ridehail process (docs/DEPLOY.md, sizing).

Starts everything on free loopback ports, in the shape docker-compose.yml runs it but on
one machine: nats-server with JetStream, a Temporal dev server (in memory), a throwaway
PostgreSQL database brought up with `ridehail db upgrade`, then `ridehail api`,
`ridehail worker`, `ridehail consumers` and `ridehail relay` (one or more of each), each a
separate process configured only through RIDEHAIL_* settings. It then drives rides
through the HTTP API only — each ride has its own driver waiting at the pickup, who
accepts, arrives, starts and completes — with a fixed number of rides in flight, samples
each process's resident memory (VmRSS) while idle and under load, and prints a report.
Everything it started is stopped and the database dropped at the end. The stack and the
rides are sizing_stack.py's, beside this file; scale_curve.py runs them in several shapes.

Run from the project root with the project's Python (the dev extra installed):

    python deploy/sizing/ride_load.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432 \
        --rides 200 --concurrency 20 --api 2 --workers 2

Nothing here is a test: it reports what it saw on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys

from sizing_figures import cpu_seconds
from sizing_stack import Load, api_clients, parser_for, pct, running_stack


async def measure(args: argparse.Namespace) -> int:
    counts = {"api": args.api, "worker": args.workers, "consumers": args.consumers,
              "relay": args.relays}
    async with running_stack(args.postgres, counts, args.keep_logs) as (stack, _):
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
        apis = api_clients(stack, args.concurrency)
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
        shape = " / ".join(f"{n} {kind}" for kind, n in stack.counts.items())
        print(f"\nridehail sizing run: {args.rides} rides, {args.concurrency} in flight, "
              f"{shape} process(es), "
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


def main() -> int:
    parser = parser_for(__doc__, rides=200)
    parser.add_argument("--api", type=int, default=1, help="API processes")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--consumers", type=int, default=1, help="consumers processes")
    parser.add_argument("--relays", type=int, default=1, help="relay processes")
    return asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
