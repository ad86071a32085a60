"""``ridehail bench``: a fixed workload through the HTTP API against a running stack, and
(``--baseline``) the same workload on bare Temporal in the same run.

Each of ``concurrency`` riders requests a ride and follows it to its end, acting for the
driver the saga picked (``ridehail.load.workload``); then requests the next ride, until
``rides`` have been requested. The CPU time and memory of the process serving the API
(under ``ridehail dev``, the one process that also runs the worker, the consumers and the
relay), of the Temporal server and of nats-server are read from the operating system.
At the end the bench checks that every ride ended, that the consumers caught up, that
``ridehail audit`` passes and that nothing new is in the DLQ.

The anchor (``ridehail.load.baseline``) runs rides of the same shape on the same Temporal
server, with ridehail's worker settings, its worker in this process. The two sides run
in alternating blocks (``rounds``), so that the background load of a shared machine
weighs on both alike; ridehail's block ends when its consumers have caught up too.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from domain.status import RideStatus
from infra.config import Settings
from ridehail.load.apiclient import Api
from ridehail.load.benchchecks import caught_up, check_ridehail, unreachable
from ridehail.load.benchfigures import (
    BenchReport,
    RideResult,
    RunFigures,
    figures,
    percentiles,
    print_report,
)
from ridehail.load.city import City
from ridehail.load.procwatch import (
    ProcessUsage,
    ProcessWatch,
    describe_role,
    machine_info,
    stack_processes,
)
from ridehail.load.workload import RidehailWorkload

__all__ = ["BenchReport", "RideResult", "RunFigures", "percentiles", "print_report",
           "run_bench", "unreachable"]

if TYPE_CHECKING:
    from temporalio.client import Client

    from ridehail.processes.components import Runtime


# --- the workload ------------------------------------------------------------------------------


async def run_workload(rides: int, concurrency: int,
                       one: Callable[[int], Awaitable[RideResult]],
                       done: Callable[[RideResult], None], first_index: int = 0
                       ) -> tuple[list[RideResult], float]:
    """``rides`` rides (numbered from ``first_index``), ``concurrency`` at a time; returns
    them and the seconds from the first request to the last ending."""
    results: list[RideResult] = []
    next_index = first_index
    end_index = first_index + rides
    start = time.perf_counter()
    last_end = start

    async def rider() -> None:
        nonlocal next_index, last_end
        while next_index < end_index:
            i = next_index
            next_index += 1
            try:
                result = await one(i)
            except Exception as e:  # noqa: BLE001 — a failed ride is a figure, not a crash
                result = RideResult("error", error=f"{type(e).__name__}: {e}"[:300])
            last_end = time.perf_counter()
            results.append(result)
            done(result)

    await asyncio.gather(*(rider() for _ in range(min(concurrency, rides))))
    return results, last_end - start


# --- running it --------------------------------------------------------------------------------


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                    console=console, transient=False)


class Phase:
    """One side of the bench — ridehail or the anchor — run in one or more blocks; its
    figures cover all of them. ``drain`` runs at the end of each block, inside the measured
    time: ridehail's block ends when its consumers have caught up too, so no work of one
    side spills into the other's block."""

    def __init__(self, name: str, one: Callable[[int], Awaitable[RideResult]],
                 roles: dict[str, int], drain: Callable[[], Awaitable[bool]] | None = None,
                 others: dict[str, int] | None = None) -> None:
        self.name = name
        self.one = one
        self.roles = roles
        self.others = others or {}  # the other side's processes, watched but not counted
        self.others_cpu_s: dict[str, float] = {}
        self.drain = drain
        self.results: list[RideResult] = []
        self.elapsed_s = 0.0
        self.drain_s = 0.0
        self.drained = True
        self.usage: dict[str, ProcessUsage] = {}
        self.load_before: tuple[float, float, float] | None = None
        self.load_after: tuple[float, float, float] | None = None

    async def block(self, size: int, concurrency: int, progress: Progress,
                    task: TaskID) -> None:
        completed = sum(r.status == RideStatus.COMPLETED for r in self.results)
        started = time.perf_counter() - self.elapsed_s

        def done(r: RideResult) -> None:
            nonlocal completed
            completed += r.status == RideStatus.COMPLETED
            rate = completed / (time.perf_counter() - started)
            progress.update(task, advance=1, rate=f"{rate:5.1f} rides/s")

        self.load_before = self.load_before or os.getloadavg()
        watch = ProcessWatch(self.roles)
        watch.start()
        bystanders = ProcessWatch(self.others)
        bystanders.start()
        results, elapsed = await run_workload(size, concurrency, self.one, done,
                                              first_index=len(self.results))
        if self.drain is not None:
            t0 = time.perf_counter()
            self.drained = await self.drain() and self.drained
            self.drain_s += time.perf_counter() - t0
            elapsed += time.perf_counter() - t0
        for u in await bystanders.stop():
            self.others_cpu_s[u.role] = self.others_cpu_s.get(u.role, 0.0) + u.cpu_s
        for u in await watch.stop():
            seen = self.usage.get(u.role)
            if seen is not None:
                u.cpu_s += seen.cpu_s
                u.peak_rss_mb = max(u.peak_rss_mb, seen.peak_rss_mb)
            self.usage[u.role] = u
        self.load_after = os.getloadavg()
        self.results += results
        self.elapsed_s += elapsed

    def figures(self, concurrency: int, blocks: int) -> RunFigures:
        out = figures(self.name, self.results, concurrency, self.elapsed_s)
        out.processes = list(self.usage.values())
        out.load_before, out.load_after = self.load_before, self.load_after
        out.blocks, out.drain_s = blocks, self.drain_s
        out.others_cpu_s = {k: round(v, 2) for k, v in self.others_cpu_s.items()}
        if out.processes:
            cpu_s = sum(p.cpu_s for p in out.processes)
            if out.completed:
                out.cpu_per_ride_s = cpu_s / out.completed
            if out.elapsed_s > 0:
                out.cores_busy = cpu_s / out.elapsed_s
        return out


def blocks_of(rides: int, rounds: int) -> list[int]:
    """``rides`` split into ``rounds`` blocks as even as can be."""
    rounds = max(1, min(rounds, rides))
    return [rides // rounds + (i < rides % rounds) for i in range(rounds)]


# the options of ridehail's worker the report shows, the anchor's worker having the same
WORKER_SETTINGS_SHOWN = (
    "max_concurrent_activities", "max_concurrent_workflow_tasks", "max_cached_workflows",
    "workflow_task_poller_behavior", "activity_task_poller_behavior",
    "disable_eager_activity_execution", "max_concurrent_local_activities",
    "graceful_shutdown_timeout")
ANCHOR_ROLES = ("temporal", "bench")  # the processes the anchor's rides cost


async def run_bench(settings: Settings, *, rides: int, drivers: int, concurrency: int,
                    baseline: bool, ridehail: bool = True, rounds: int = 3,
                    city: City | None = None, seed: int = 7, ride_timeout_s: float = 120.0,
                    console: Console | None = None) -> BenchReport:
    """The whole bench against the stack ``settings`` point at. With both sides, the
    rides run in ``rounds`` alternating blocks (ridehail, anchor, ridehail, …) so that a
    change in the machine's background load weighs on both alike."""
    from ridehail.processes.components import runtime

    console = console or Console()
    report = BenchReport(machine=machine_info())
    roles = stack_processes(settings)
    report.measured = _measured(settings, roles)
    sizes = blocks_of(rides, rounds if ridehail and baseline else 1)

    async with contextlib.AsyncExitStack() as stack:
        rt = await stack.enter_async_context(
            runtime(settings, "bench", temporal=True, prepare=False))
        assert rt.temporal is not None
        report.worker_settings = await _worker_settings(rt.temporal)
        phases: list[Phase] = []
        side: RidehailSide | None = None
        if ridehail:
            api = Api(settings.api_url, settings.require_jwt_secret(),
                      max_connections=4 * concurrency + 20,
                      token_ttl_s=min(86400, settings.jwt_max_ttl_s))
            stack.push_async_callback(api.aclose)
            work = RidehailWorkload(api, city or City(), drivers, seed, ride_timeout_s)
            side = await RidehailSide.start(rt, work, roles, console)
            phases.append(side.phase)
        if baseline:
            phases += await _anchor_phases(stack, rt.temporal, roles, report, ride_timeout_s)
        await _run_blocks(phases, sizes, rides, concurrency, console)
        for phase in phases:
            setattr(report, phase.name, phase.figures(concurrency, len(sizes)))
        if side is not None and report.ridehail is not None:
            await side.finish(settings, report, report.ridehail, rt)
        if report.baseline is not None:
            base = report.baseline
            report.checks["baseline rides ended"] = {
                "ok": base.ended == base.rides, "ended": base.ended, "rides": base.rides}
    return report


def _own(roles: dict[str, int]) -> dict[str, int]:
    """The stack's processes without "bench" where it is the API's (when the API runs in
    this process, as in the tests, "bench" is the same process)."""
    return {k: v for k, v in roles.items() if not (k == "bench" and v == roles.get("api"))}


def _measured(settings: Settings, roles: dict[str, int]) -> dict[str, str]:
    """What process each role's figures are read from, or why the API's are not."""
    measured = {role: f"pid {pid}: {describe_role(role, roles)}"
                for role, pid in _own(roles).items()}
    if "api" not in roles:
        measured["api"] = (f"no process seen listening on port {settings.api_port}: "
                           "CPU and memory of the API and worker not measured")
    return measured


async def _worker_settings(client: Client) -> dict[str, str]:
    from ridehail.load.baseline import ridehail_worker_settings

    return {k: str(v) for k, v in (await ridehail_worker_settings(client)).items()
            if k in WORKER_SETTINGS_SHOWN}


class RidehailSide:
    """ridehail's side of the bench: its phase, and what the checks at the end compare
    with (the DLQ's depth and the last RIDES event before it)."""

    def __init__(self, work: RidehailWorkload, phase: Phase, dlq_before: int,
                 seq_before: int) -> None:
        self.work = work
        self.phase = phase
        self.dlq_before = dlq_before
        self.seq_before = seq_before

    @classmethod
    async def start(cls, rt: Runtime, work: RidehailWorkload, roles: dict[str, int],
                    console: Console) -> RidehailSide:
        """Read the DLQ and RIDES, then bring the bench's drivers online."""
        from events.dlq import dlq_depth

        dlq_before = await dlq_depth(rt.js)
        seq_before = (await rt.js.stream_info("RIDES")).state.last_seq
        console.print(f"[dim]{len(work.drivers)} drivers going online …[/]")
        await work.drivers_online()
        phase = Phase("ridehail", work.ride, _own(roles), drain=lambda: caught_up(rt.js))
        return cls(work, phase, dlq_before, seq_before)

    async def finish(self, settings: Settings, report: BenchReport, figures_: RunFigures,
                     rt: Runtime) -> None:
        """Take the drivers offline, count the events, run the end-of-run checks."""
        await self.work.drivers_offline()
        events = (await rt.js.stream_info("RIDES")).state.last_seq - self.seq_before
        figures_.events_per_s = events / figures_.elapsed_s
        await check_ridehail(settings, report, figures_, self.phase.drained, rt,
                             self.dlq_before)


async def _anchor_phases(stack: contextlib.AsyncExitStack, client: Client,
                         roles: dict[str, int], report: BenchReport,
                         ride_timeout_s: float) -> list[Phase]:
    """The anchor's two phases, its worker started: ridehail's step kinds (its step
    table), and, as a second figure, every step as a regular activity. What the anchor
    costs is the Temporal server and this process (its worker and its client); ridehail's
    own processes sit idle meanwhile."""
    from ridehail.load.baseline import build_baseline_worker, drive_ride, ridehail_local_steps

    run = uuid.uuid4().hex[:8]

    def anchor_ride(kind: str, local_steps: list[str]
                    ) -> Callable[[int], Awaitable[RideResult]]:
        async def one(i: int) -> RideResult:
            async with asyncio.timeout(ride_timeout_s):
                assigned, end, status = await drive_ride(
                    client, f"{run}-{kind}-{i}", local_steps=local_steps)
            return RideResult(status, assigned, end)
        return one

    await stack.enter_async_context(await build_baseline_worker(client))
    mine = {k: v for k, v in roles.items() if k in ANCHOR_ROLES}
    others = {k: v for k, v in roles.items() if k not in ANCHOR_ROLES}
    report.local_steps = ridehail_local_steps()
    return [Phase("baseline", anchor_ride("same", report.local_steps), mine, others=others),
            Phase("baseline_all_regular", anchor_ride("regular", []), mine, others=others)]


async def _run_blocks(phases: list[Phase], sizes: list[int], rides: int, concurrency: int,
                      console: Console) -> None:
    """Each block size in turn, every phase once in it, with a progress bar per phase."""
    with _progress(console) as progress:
        tasks = {p.name: progress.add_task(f"{p.name:<8}", total=rides, rate="")
                 for p in phases}
        for size in sizes:
            for phase in phases:
                await phase.block(size, concurrency, progress, tasks[phase.name])
