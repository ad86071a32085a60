"""Measure a scale curve on the production shape: throughput and CPU per ride of each
component as the number of processes of each grows (docs/DEPLOY.md, sizing).

Runs a list of configurations, each on a stack of its own, started fresh and stopped
before the next, as ride_load.py starts it (sizing_stack.py, beside this file):
nats-server with JetStream, a Temporal dev server (in memory), a throwaway PostgreSQL
database brought up with `ridehail db upgrade`, and N processes of each of `ridehail
api`, `ridehail worker`, `ridehail consumers` and `ridehail relay`, each configured only
through RIDEHAIL_* settings. By default six: `1-each` (one process of every component),
each component doubled alone (`api×2`, `worker×2`, `consumers×2`, `relay×2`), and
`all×2`. On each it drives `--warmup` rides first, unmeasured, then `--rides` rides
through the HTTP API only, `--concurrency` in flight, round-robin over the API processes
— each ride has its own driver waiting at the pickup, who accepts, arrives, starts and
completes — and waits until every consumer group has caught up. Over that window (the
load and the catch-up) it reads from /proc the CPU time of every process by kind
(sizing_figures.py): ridehail's components, the Temporal server, nats-server, the
PostgreSQL backends of the run's database (found in pg_stat_activity) and the server's
shared processes, the load client itself, and what the rest of the machine used; and
the machine's busy CPU from /proc/stat, so that saturation shows.

With `--sweep 10,20,40,80` it runs one configuration at each of those numbers of rides in
flight instead, each again on a fresh stack, and says where throughput stops rising: the
first step that gains less than 10% over the step before.

One line per run as it finishes goes to stderr, the tables to stdout, and `--json PATH`
gets every figure. Everything it started is stopped and each database dropped at the end
of each run, on Ctrl-C and on an error as well.

Run from the project root with the project's Python (the dev extra installed):

    python deploy/sizing/scale_curve.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432 \
        --rides 300 --concurrency 20 --json scale.json
    python deploy/sizing/scale_curve.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432 \
        --configs all×2 --sweep 10,20,40,80 --json sweep.json

A configuration is `1-each`, `KIND×N` (`x` does for `×`), `all×N`, or terms joined by `+`
(`api×2+worker×3`). There is no `--drivers`: every ride brings its own. Give each run
rides enough for its concurrency (ten times as many or more), or the ramp at the start
and the tail at the end weigh on the rate.

Nothing here is a test: it reports what it saw on this machine, which must be quiet for
figures that carry over (each run's load average before and after is in the JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.js import JetStreamContext
from sizing_figures import (
    DEFAULT_CONFIGS,
    PostgresCpu,
    cpu_seconds,
    describe_saturation,
    machine_ticks,
    parse_config,
    saturation,
)
from sizing_stack import (
    Load,
    Stack,
    admin_dsn,
    api_clients,
    parser_for,
    pct,
    running_stack,
)

from ridehail.load.apiclient import Api
from ridehail.load.benchchecks import caught_up

# CPU by kind, in the tables' order: "other" is the machine's busy time that none of the
# others account for (other work on the machine, the kernel's own)
KINDS = ("api", "worker", "consumers", "relay", "temporal", "nats-server", "postgres",
         "postgres-shared", "client", "other")
SHORT = {"nats-server": "nats", "postgres": "pg", "postgres-shared": "pg-shared"}
SAMPLE_S = 0.5


async def sample(stack: Stack, pg: PostgresCpu) -> None:
    while True:
        stack.sample()
        pg.poll()
        await asyncio.sleep(SAMPLE_S)


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 1)


@dataclass
class Window:
    """What the measured rides and the catch-up after them saw: the load and its timing,
    the CPU seconds by kind, the machine's ticks and the messages in each stream."""
    load: Load
    calls_before: int
    load_avg_before: float
    elapsed_s: float
    window_s: float
    drained: bool
    cpu: dict[str, float | None]
    ticks: tuple[int, int, int]  # busy, total, steal
    streams_before: dict[str, int]
    streams: dict[str, int]


async def loaded(args: argparse.Namespace, stack: Stack, apis: list[Api], pg: PostgresCpu,
                 concurrency: int) -> dict[str, Any]:
    """Warm up, then the measured rides and the catch-up after them; the figures."""
    nc = await nats.connect(stack.env["RIDEHAIL_NATS_URL"])
    try:
        js = nc.jetstream()
        if args.warmup:
            warm = Load(apis, args.ride_timeout, args.poll)
            await warm.run(args.warmup, concurrency, first=args.rides)
            if warm.failures:
                raise RuntimeError(f"warm-up ride failed: {warm.failures[0]}")
            await caught_up(js, args.drain_timeout)
        window = await measured(args, stack, apis, pg, js, concurrency)
    finally:
        await nc.close()
    window.cpu.update(pg.totals() if pg.local else {"postgres": None, "postgres-shared": None})
    return run_figures(args, stack, pg, window, concurrency)


async def measured(args: argparse.Namespace, stack: Stack, apis: list[Api], pg: PostgresCpu,
                   js: JetStreamContext, concurrency: int) -> Window:
    """The measured rides and the catch-up after them, sampled; the CPU of the stack's
    processes and of this one over that window."""
    streams_before = await stack.stream_messages()
    load = Load(apis, args.ride_timeout, args.poll)
    calls_before, load_avg = load.calls, round(os.getloadavg()[0], 2)
    t0 = time.monotonic()
    for p in stack.procs:
        p.cpu_before = cpu_seconds(p.popen.pid)
    client_before, machine_before = cpu_seconds(os.getpid()), machine_ticks()
    pg.start()
    sampling = asyncio.create_task(sample(stack, pg))
    try:
        elapsed = await load.run(args.rides, concurrency)
        drained = await caught_up(js, args.drain_timeout)
    finally:
        sampling.cancel()
    pg.poll()
    cpu: dict[str, float | None] = dict.fromkeys(KINDS, 0.0)
    for p in stack.procs:
        p.cpu_load = cpu_seconds(p.popen.pid) - p.cpu_before
        cpu[p.kind] = (cpu[p.kind] or 0.0) + p.cpu_load
    cpu["client"] = cpu_seconds(os.getpid()) - client_before
    busy, total, steal = (b - a for a, b in zip(machine_before, machine_ticks(), strict=True))
    window = time.monotonic() - t0
    stack.check_alive()
    return Window(load, calls_before, load_avg, elapsed, window, drained, cpu,
                  (busy, total, steal), streams_before, await stack.stream_messages())


def run_figures(args: argparse.Namespace, stack: Stack, pg: PostgresCpu, w: Window,
            concurrency: int) -> dict[str, Any]:
    """One run's figures, as the tables and the JSON file give them."""
    load, cpu = w.load, w.cpu
    busy, total, steal = w.ticks
    machine_s = busy / os.sysconf("SC_CLK_TCK")
    cpu["other"] = machine_s - sum(v or 0.0 for k, v in cpu.items() if k != "other")
    done = len(load.durations)
    return {
        "concurrency": concurrency, "rides": args.rides, "completed": done,
        "failed": len(load.failures), "failures": load.failures[:10],
        "load_s": round(w.elapsed_s, 2), "window_s": round(w.window_s, 2),
        "caught_up": w.drained, "rides_per_s": round(done / w.elapsed_s, 3),
        "latency_s": {"p50": round(pct(load.durations, 0.5), 2) if done else None,
                      "p95": round(pct(load.durations, 0.95), 2) if done else None},
        "post_ride_ms": {q: ms(pct(load.request_latencies, v)) if done else None
                         for q, v in (("p50", 0.5), ("p95", 0.95))},
        "http_calls": load.calls - w.calls_before,
        "cpu_s": {k: None if v is None else round(v, 3) for k, v in cpu.items()},
        "cpu_ms_per_ride": {k: ms(v / done) if done and v is not None else None
                            for k, v in cpu.items()},
        "processes": [{"name": p.name, "kind": p.kind, "pid": p.popen.pid,
                       "cpu_s": round(p.cpu_load, 3), "peak_rss_mib": round(p.peak_mib)}
                      for p in stack.procs],
        "postgres": pg.figures(),
        "stream_messages_per_ride": {
            name: round((n - w.streams_before.get(name, 0)) / max(done, 1), 2)
            for name, n in sorted(w.streams.items())},
        "machine": {"cpus": os.cpu_count(), "busy_pct": round(100 * busy / max(total, 1), 1),
                    "steal_pct": round(100 * steal / max(total, 1), 1),
                    "busy_cpu_s": round(machine_s, 2), "load_avg_before": w.load_avg_before,
                    "load_avg_after": round(os.getloadavg()[0], 2)},
    }


async def measure(args: argparse.Namespace, name: str, counts: dict[str, int],
                  concurrency: int) -> dict[str, Any]:
    """One configuration on a stack of its own, stopped (and its database dropped) after."""
    async with running_stack(args.postgres, counts, args.keep_logs) as (stack, db_name):
        await asyncio.sleep(args.settle)
        apis = api_clients(stack, concurrency)
        pg = PostgresCpu(admin_dsn(args.postgres), db_name)
        try:
            figures = await loaded(args, stack, apis, pg, concurrency)
        finally:
            pg.close()
            for api in apis:
                await api.aclose()
    return {"config": name, "counts": counts, **figures}


def label(run: dict[str, Any], sweep: bool) -> str:
    return f"{run['config']} @{run['concurrency']}" if sweep else run["config"]


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def one_line(run: dict[str, Any]) -> str:
    if "error" in run:
        return f"failed: {run['error'][:300]}"
    lat = run["latency_s"]
    per_ride = sum(v for k, v in run["cpu_ms_per_ride"].items()
                   if v is not None and k not in ("client", "other"))
    return (f"{run['completed']}/{run['rides']} rides in {run['load_s']:.1f} s "
            f"(+{run['window_s'] - run['load_s']:.1f} s catch-up), "
            f"{run['rides_per_s']:.2f} rides/s, p50 {lat['p50']} s, p95 {lat['p95']} s; "
            f"machine {run['machine']['busy_pct']:.0f}% busy, "
            f"{per_ride:.0f} ms CPU per ride in the stack")


def cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_tables(runs: list[dict[str, Any]], sweep: bool) -> None:
    if not runs:
        print("no run finished")
        return
    width = max([24, *(len(label(r, sweep)) + 1 for r in runs)])
    print(f"\n{'run':{width}s} {'a/w/c/r':>8s} {'in flight':>9s} {'done':>8s} {'rides/s':>8s} "
          f"{'p50 s':>6s} {'p95 s':>6s} {'busy %':>6s}")
    for r in runs:
        if "error" in r:
            print(f"{label(r, sweep):{width}s} {one_line(r)}")
            continue
        shape = "/".join(str(r["counts"][k]) for k in ("api", "worker", "consumers", "relay"))
        done = f"{r['completed']}/{r['rides']}"
        print(f"{label(r, sweep):{width}s} {shape:>8s} {r['concurrency']:9d} {done:>8s} "
              f"{r['rides_per_s']:8.2f} {cell(r['latency_s']['p50'], 2):>6s} "
              f"{cell(r['latency_s']['p95'], 2):>6s} {r['machine']['busy_pct']:6.0f}")
    for title, key, digits in (("CPU ms per completed ride", "cpu_ms_per_ride", 0),
                               ("CPU seconds over the window (load + catch-up)", "cpu_s", 1)):
        print(f"\n{title}:")
        print(f"{'run':{width}s} " + " ".join(f"{SHORT.get(k, k):>9s}" for k in KINDS)
              + f" {'machine':>9s}")
        for r in runs:
            if "error" in r:
                continue
            values = r[key]
            total = sum(v for v in values.values() if v is not None)
            print(f"{label(r, sweep):{width}s} "
                  + " ".join(f"{cell(values[k], digits):>9s}" for k in KINDS)
                  + f" {total:9.{digits}f}")
    if any(r.get("postgres", {}).get("measured") is False for r in runs):
        print("pg: the PostgreSQL server is not on this machine; its CPU is not measured")


def commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


async def campaign(args: argparse.Namespace, plan: list[tuple[str, dict[str, int], int]]
                   ) -> tuple[list[dict[str, Any]], bool]:
    """Run the plan, one line of progress per run; (the runs, whether interrupted)."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    runs: list[dict[str, Any]] = []
    try:
        for i, (name, counts, concurrency) in enumerate(plan, 1):
            shape = ", ".join(f"{n} {kind}" for kind, n in counts.items())
            progress(f"[{i}/{len(plan)}] {name}, {concurrency} in flight: starting {shape} …")
            try:
                run = await measure(args, name, counts, concurrency)
            except Exception as e:  # noqa: BLE001 — reported; the next configuration runs
                run = {"config": name, "counts": counts, "concurrency": concurrency,
                       "error": f"{type(e).__name__}: {e}"}
            runs.append(run)
            progress(f"[{i}/{len(plan)}] {label(run, bool(args.sweep))}: {one_line(run)}")
    except asyncio.CancelledError:
        progress("interrupted: everything it started is stopped; the runs that finished:")
        return runs, True
    return runs, False


def report(args: argparse.Namespace, plan: list[tuple[str, dict[str, int], int]],
           runs: list[dict[str, Any]], interrupted: bool) -> int:
    """The tables, the sweep's saturation and the JSON file; the exit code."""
    sweep = bool(args.sweep)
    print_tables(runs, sweep)
    figures: dict[str, Any] = {
        "tool": "deploy/sizing/scale_curve.py", "commit": commit(),
        "started_at": args.started_at, "interrupted": interrupted,
        "options": {k: getattr(args, k) for k in (
            "configs", "rides", "concurrency", "sweep", "warmup", "poll", "settle",
            "ride_timeout", "drain_timeout")},
        "runs": runs, "sweep": None}
    steps = [(r["concurrency"], r["rides_per_s"]) for r in runs if "error" not in r]
    if sweep and steps:
        figures["sweep"] = {"config": plan[0][0], "steps": steps,
                            "saturation": saturation(steps)}
        print(f"\n{plan[0][0]}: {describe_saturation(figures['sweep']['saturation'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
        print(f"figures written to {args.json}")
    if interrupted:
        return 130
    return 1 if any("error" in r or r["failed"] for r in runs) else 0


def main() -> int:
    parser = parser_for(__doc__, rides=300)
    parser.add_argument("--configs", help="comma-separated configurations; default "
                        f"{','.join(DEFAULT_CONFIGS)} (1-each with --sweep)")
    parser.add_argument("--sweep", help="comma-separated rides in flight: one configuration "
                        "at each, on a fresh stack, e.g. 10,20,40,80")
    parser.add_argument("--warmup", type=int, default=10,
                        help="unmeasured rides before each run's measured ones")
    parser.add_argument("--drain-timeout", type=float, default=60,
                        help="longest wait for the consumers to catch up after the rides")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args()
    args.started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    args.configs = args.configs or ("1-each" if args.sweep else ",".join(DEFAULT_CONFIGS))
    try:
        configs = [parse_config(c) for c in args.configs.split(",") if c.strip()]
        levels = [int(c) for c in args.sweep.split(",")] if args.sweep else [args.concurrency]
    except ValueError as e:
        parser.error(str(e))
    if args.sweep and len(configs) != 1:
        parser.error("--sweep runs one configuration: name one with --configs")
    if min(levels) < 1 or args.rides < 1:
        parser.error("rides and rides in flight must be 1 or more")
    plan = [(name, counts, c) for name, counts in configs for c in levels]
    runs, interrupted = asyncio.run(campaign(args, plan))
    return report(args, plan, runs, interrupted)


if __name__ == "__main__":
    sys.exit(main())
