"""``ridehail bench --duration SECONDS``: a soak. Rides start at a steady rate for that
long (``--rate``, or 70% of the throughput the last full bench on this data dir measured),
and the report says, per process of the stack, its memory after the warm-up and at the
end (``rss_growth_pct``), the latency percentiles of each minute, and the end-of-run
checks of the full bench (every ride ended, consumers caught up, audit, DLQ). Each minute
also gives every process's memory at its end and its CPU per ride started in it, so a
reader can tell growth that levels off (a cache filling) from growth that does not, and a
ride that gets dearer as the stack keeps more from one that does not. What each stream
stores after the warm-up and at the end explains nats-server's steps: it keeps the block a
stream is writing in memory, in a buffer of 1, 4 or 8 MiB (docs/BENCHMARKS.md, Soak).

Memory is judged over the soak's second half (``rss_second_half_pct``), once caches and
write buffers have filled; and at the end of each minute the report gives what each
stream stores and how many rows each table housekeeping prunes holds, so a reader sees
those level off too when the lifetimes are shorter than the soak. What the soak prints at
its end is ``ridehail.load.soakprint``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from rich.console import Console
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from infra.config import Settings
from ridehail.load.apiclient import Api
from ridehail.load.benchchecks import caught_up, check_ridehail
from ridehail.load.benchfigures import BenchReport, RideResult, figures, percentiles
from ridehail.load.city import City
from ridehail.load.procwatch import stack_processes
from store.db import Database

if TYPE_CHECKING:
    from ridehail.load.workload import RidehailWorkload
    from ridehail.processes.components import Runtime

LAST_BENCH = "bench-last.json"  # in the data dir: the last full bench's throughput
RATE_SHARE = 0.7  # of that throughput, by default
SAMPLE_EVERY_S = 5.0
MAX_WARM_UP_S = 60.0
MINUTE_S = 60.0  # how often what the streams and the pruned tables keep is read


@dataclass
class ProcessMemory:
    pid: int
    rss_warm_mb: float | None = None  # the first sample after the warm-up
    rss_half_mb: float | None = None  # the first sample past half the soak
    rss_end_mb: float | None = None
    rss_peak_mb: float = 0.0

    @property
    def rss_second_half_pct(self) -> float | None:
        """Growth from half the soak to its end: the figure memory is judged by."""
        if not self.rss_half_mb or self.rss_end_mb is None:
            return None
        return (self.rss_end_mb - self.rss_half_mb) / self.rss_half_mb * 100

    @property
    def rss_growth_pct(self) -> float | None:
        if not self.rss_warm_mb or self.rss_end_mb is None:
            return None
        return (self.rss_end_mb - self.rss_warm_mb) / self.rss_warm_mb * 100


@dataclass
class StreamSize:
    """What a stream stores, after the warm-up and at the end."""
    warm_mib: float | None = None
    end_mib: float | None = None
    end_messages: int | None = None


@dataclass(frozen=True)
class Sample:
    """One reading of one process: seconds since the soak started, RSS, CPU time."""
    t_s: float
    role: str
    rss_mb: float
    cpu_s: float


@dataclass
class SoakReport:
    duration_s: float
    rate_per_s: float
    rate_from: str
    warm_up_s: float
    rides: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    processes: dict[str, ProcessMemory] = field(default_factory=dict)
    per_minute: list[dict[str, Any]] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    streams: dict[str, StreamSize] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)  # for per_minute, not reported
    # at the end of each minute: each stream's (messages, MiB) and each pruned table's rows
    kept_by_minute: list[dict[str, Any]] = field(default_factory=list)

    @property
    def p95_drift(self) -> float | None:
        """The last whole minute's p95 to completion over the first's (1.0: no drift)."""
        full = [m for m in self.per_minute if m["whole"] and m["to_completed"]["p95"]]
        if len(full) < 2:
            return None
        return full[-1]["to_completed"]["p95"] / full[0]["to_completed"]["p95"]

    @property
    def ok(self) -> bool:
        return all(v.get("ok", True) for v in self.checks.values() if isinstance(v, dict))

    def as_dict(self) -> dict[str, Any]:
        return {
            "soak": {"duration_s": self.duration_s, "rate_per_s": self.rate_per_s,
                     "rate_from": self.rate_from, "warm_up_s": self.warm_up_s,
                     "rides": self.rides, "statuses": self.statuses,
                     "p95_drift": self.p95_drift, "per_minute": self.per_minute},
            "rss_growth_pct": {r: p.rss_growth_pct for r, p in self.processes.items()},
            "rss_second_half_pct": {r: p.rss_second_half_pct
                                    for r, p in self.processes.items()},
            "processes": {r: {**asdict(p), "rss_growth_pct": p.rss_growth_pct,
                              "rss_second_half_pct": p.rss_second_half_pct}
                          for r, p in self.processes.items()},
            "streams": {name: asdict(size) for name, size in self.streams.items()},
            "checks": self.checks,
            "ok": self.ok,
        }


def remember_throughput(settings: Settings, rides_per_s: float) -> None:
    """Note a full bench's ridehail throughput, the default base of the next soak."""
    with contextlib.suppress(OSError):
        (settings.data_dir / LAST_BENCH).write_text(json.dumps(
            {"rides_per_s": rides_per_s, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}))


def default_rate(settings: Settings) -> tuple[float, str] | None:
    path: Path = settings.data_dir / LAST_BENCH
    try:
        last = json.loads(path.read_text())
        return RATE_SHARE * float(last["rides_per_s"]), (
            f"{RATE_SHARE:.0%} of the last full bench ({last['rides_per_s']:.2f} rides/s, "
            f"{last.get('at', '?')})")
    except (OSError, ValueError, KeyError, TypeError):
        return None


async def _sample(report: SoakReport, roles: dict[str, int], started: float,
                  warm_until: float, stop: asyncio.Event) -> None:
    half = started + report.duration_s / 2
    while True:
        now = time.monotonic()
        for role, pid in roles.items():
            try:
                with (process := psutil.Process(pid)).oneshot():
                    rss = process.memory_info().rss / 2**20
                    cpu = process.cpu_times()
            except psutil.Error:
                continue
            report.samples.append(Sample(now - started, role, rss, cpu.user + cpu.system))
            mem = report.processes[role]
            mem.rss_peak_mb = max(mem.rss_peak_mb, rss)
            if now >= warm_until and mem.rss_warm_mb is None:
                mem.rss_warm_mb = rss
            if now >= half and mem.rss_half_mb is None:
                mem.rss_half_mb = rss
            mem.rss_end_mb = rss
        try:
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)
            return
        except TimeoutError:
            pass


async def _stored(js: JetStreamContext) -> dict[str, tuple[int, float]]:
    """Each stream's messages and MiB stored; a stream NATS does not answer for is left
    out."""
    from events.streams import stream_configs, stream_name

    stored = {}
    for cfg in stream_configs():
        name = stream_name(cfg)
        try:
            state = (await js.stream_info(name)).state
        except NatsError:
            continue
        stored[name] = (state.messages, state.bytes / 2**20)
    return stored


def _rows_kept() -> Callable[[Session], dict[str, int]]:
    """Reads how many rows each table housekeeping prunes holds (those this kind of
    database has: ``outbox_ids`` is PostgreSQL's)."""
    from sqlmodel import SQLModel

    from store.prune import stores_on

    def count(session: Session) -> dict[str, int]:
        conn, tables = session.connection(), SQLModel.metadata.tables
        return {store: conn.execute(
                    select(func.count()).select_from(tables[store])).scalar_one()
                for store in stores_on(conn.dialect.name)}

    return count


async def _every_minute(report: SoakReport, js: JetStreamContext, db: Database,
                        started: float, stop: asyncio.Event) -> None:
    """At the end of each minute of the soak: what each stream stores and each pruned
    table's rows (a reading that fails is left out, not fatal)."""
    minute = 1
    while True:
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, started + MINUTE_S * minute
                                                    - time.monotonic()))
            return
        except TimeoutError:
            pass
        reading: dict[str, Any] = {"minute": minute, "streams": {}, "rows": {}}
        with contextlib.suppress(NatsError, TimeoutError):
            reading["streams"] = {name: {"messages": n, "mib": round(mib, 2)}
                                  for name, (n, mib) in (await _stored(js)).items()}
        with contextlib.suppress(SQLAlchemyError):
            reading["rows"] = await db.read(_rows_kept())
        report.kept_by_minute.append(reading)
        minute += 1


def _stream_sizes(warm: dict[str, tuple[int, float]], end: dict[str, tuple[int, float]]
                  ) -> dict[str, StreamSize]:
    return {name: StreamSize(warm[name][1] if name in warm else None,
                             end[name][1] if name in end else None,
                             end[name][0] if name in end else None)
            for name in dict.fromkeys([*warm, *end])}


def _reading_at(samples: Sequence[Sample], role: str, t_s: float) -> Sample | None:
    """The role's reading nearest to ``t_s`` seconds into the soak."""
    return min((s for s in samples if s.role == role), key=lambda s: abs(s.t_s - t_s),
               default=None)


def _processes_in(samples: Sequence[Sample], start_s: float, end_s: float, rides: int
                  ) -> tuple[dict[str, float], dict[str, float | None]]:
    """Each process's RSS at the end of a span of the soak, and its CPU (ms) per ride
    started in the span."""
    rss: dict[str, float] = {}
    cpu_per_ride: dict[str, float | None] = {}
    for role in dict.fromkeys(s.role for s in samples):
        first, last = _reading_at(samples, role, start_s), _reading_at(samples, role, end_s)
        if first is None or last is None:
            continue
        rss[role] = round(last.rss_mb, 1)
        cpu_per_ride[role] = (round((last.cpu_s - first.cpu_s) / rides * 1000, 1)
                              if rides and last.t_s > first.t_s else None)
    return rss, cpu_per_ride


def _per_minute(started: list[tuple[float, RideResult]], duration_s: float,
                samples: Sequence[Sample] = ()) -> list[dict[str, Any]]:
    out = []
    minutes = int(duration_s // 60) + (1 if duration_s % 60 else 0)
    for minute in range(minutes):
        rides = [r for t, r in started if minute * 60 <= t < (minute + 1) * 60]
        done = [r for r in rides if r.status == "completed"]
        # at a steady rate, the work of rides started before a minute and done in it
        # makes up for that of rides started in it and done after it
        end_s = min((minute + 1) * 60, duration_s)
        rss, cpu_per_ride = _processes_in(samples, minute * 60, end_s, len(rides))
        out.append({
            "minute": minute + 1, "rides": len(rides), "completed": len(done),
            "whole": (minute + 1) * 60 <= duration_s,
            "to_assigned": percentiles([r.to_assigned_s for r in done
                                        if r.to_assigned_s is not None]),
            "to_completed": percentiles([r.to_end_s for r in done if r.to_end_s is not None]),
            "rss_mb": rss,
            "cpu_ms_per_ride": cpu_per_ride,
        })
    return out


async def run_soak(settings: Settings, *, duration_s: float, rate: float, rate_from: str,
                   drivers: int, city: City, seed: int, ride_timeout_s: float,
                   console: Console) -> SoakReport:
    from events.dlq import dlq_depth
    from ridehail.load.workload import RidehailWorkload
    from ridehail.processes.components import runtime

    warm_up = min(MAX_WARM_UP_S, duration_s * 0.2)
    report = SoakReport(duration_s, rate, rate_from, warm_up)
    roles = {r: pid for r, pid in stack_processes(settings).items()}
    report.processes = {r: ProcessMemory(pid) for r, pid in roles.items()}
    async with runtime(settings, "soak", temporal=True, prepare=False) as rt:
        dlq_before = await dlq_depth(rt.js)
        api = Api(settings.api_url, settings.require_jwt_secret(), max_connections=200,
                  token_ttl_s=min(86400, settings.jwt_max_ttl_s))
        try:
            work = RidehailWorkload(api, city, drivers, seed, ride_timeout_s)
            await work.drivers_online()
            started, elapsed = await _steady_load(report, roles, rt, work, console)
            await _judge(report, settings, rt, work, started, elapsed, dlq_before)
        finally:
            await api.aclose()
    return report


async def _steady_load(report: SoakReport, roles: dict[str, int], rt: Runtime,
                       work: RidehailWorkload, console: Console
                       ) -> tuple[list[tuple[float, RideResult]], float]:
    """The rides at the report's rate for its duration, each with the second it started
    at, and the seconds they took; meanwhile every process is sampled, and what each
    stream stores is read after the warm-up and at the end."""
    stop = asyncio.Event()
    t0 = time.monotonic()
    warm_up = report.warm_up_s
    sampler = asyncio.create_task(_sample(report, roles, t0, t0 + warm_up, stop))
    minutely = asyncio.create_task(_every_minute(report, rt.js, rt.db, t0, stop))

    async def stored_after_warm_up() -> dict[str, tuple[int, float]]:
        await asyncio.sleep(warm_up)
        return await _stored(rt.js)

    stored_warm = asyncio.create_task(stored_after_warm_up())
    console.print(f"[dim]soak: {report.rate_per_s:.2f} rides/s for {report.duration_s:.0f} s "
                  f"({report.rate_from}); memory after {warm_up:.0f} s and at the end[/]")
    started = await _rides_at_rate(work, report.rate_per_s, report.duration_s, t0)
    stop.set()
    await sampler
    await minutely
    report.streams = _stream_sizes(await stored_warm, await _stored(rt.js))
    return started, time.monotonic() - t0


async def _rides_at_rate(work: RidehailWorkload, rate: float, duration_s: float, t0: float
                         ) -> list[tuple[float, RideResult]]:
    """A ride started every ``1 / rate`` seconds from ``t0`` until ``duration_s``, all
    waited for; each with the second it started at."""
    started: list[tuple[float, RideResult]] = []

    async def one(i: int, at: float) -> None:
        try:
            # without its events: a soak reports no hops, and a long one would
            # hold every ride's in the bench's memory, which it measures
            result = replace(await work.ride(i), events=[])
        except Exception as e:  # noqa: BLE001 — a refused request is a result
            result = RideResult("error", error=f"{type(e).__name__}: {e}"[:200])
        started.append((at, result))

    rides: set[asyncio.Task[None]] = set()  # those still running
    i = 0
    while (at := i / rate) < duration_s:
        await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
        task = asyncio.create_task(one(i, at))
        rides.add(task)
        task.add_done_callback(rides.discard)
        i += 1
    await asyncio.gather(*rides)
    return started


async def _judge(report: SoakReport, settings: Settings, rt: Runtime, work: RidehailWorkload,
                 started: list[tuple[float, RideResult]], elapsed: float,
                 dlq_before: int) -> None:
    """The soak's figures, then the full bench's end-of-run checks, its drivers offline."""
    results = [r for _, r in started]
    report.rides = len(results)
    report.per_minute = _per_minute(started, report.duration_s, report.samples)
    kept = {k["minute"]: k for k in report.kept_by_minute}
    for m in report.per_minute:
        m["streams"] = kept.get(m["minute"], {}).get("streams", {})
        m["rows"] = kept.get(m["minute"], {}).get("rows", {})
    run = figures("soak", results, len(results), elapsed)  # every ride started was waited for
    report.statuses = run.statuses
    await work.drivers_offline()
    drained = await caught_up(rt.js)
    bench = BenchReport()
    await check_ridehail(settings, bench, run, drained, rt, dlq_before)
    report.checks = bench.checks
