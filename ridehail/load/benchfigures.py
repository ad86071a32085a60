"""The figures of ``ridehail bench``: one ride's result, a side's figures, the report
with its ratios and checks, and the report as a table."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any

from rich.console import Console
from rich.table import Table

from domain.status import FINAL, RideStatus
from ridehail.load.procwatch import ProcessUsage


@dataclass
class RideResult:
    status: str  # completed, cancelled, failed, timeout, error
    to_assigned_s: float | None = None
    to_end_s: float | None = None
    retries: int = 0  # 409s while the read model caught up (ridehail only)
    error: str | None = None
    # (type, component that committed it, commit time) of each event the ride's stream
    # delivered (ridehail only)
    events: list[tuple[str, str, datetime]] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return self.status in FINAL


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p95/p99 (inclusive method), mean and max, in seconds."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    if len(values) == 1:
        v = values[0]
        return {"p50": v, "p95": v, "p99": v, "mean": v, "max": v}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": q[49], "p95": q[94], "p99": q[98], "mean": statistics.fmean(values),
            "max": max(values)}


@dataclass
class RunFigures:
    name: str
    rides: int
    concurrency: int
    elapsed_s: float
    completed: int
    ended: int
    rides_per_s: float
    to_assigned: dict[str, float | None]
    to_completed: dict[str, float | None]
    statuses: dict[str, int]
    retries_409: int = 0
    events_per_s: float | None = None
    processes: list[ProcessUsage] = field(default_factory=list)
    load_before: tuple[float, float, float] | None = None
    load_after: tuple[float, float, float] | None = None
    errors: list[str] = field(default_factory=list)
    blocks: int = 1  # the rides ran in this many blocks, alternating with the other side
    drain_s: float = 0.0  # of elapsed_s: waiting for the consumers to catch up
    cpu_per_ride_s: float | None = None  # CPU of every measured process, per completed ride
    # the same CPU per second of the run: how many cores the side kept busy (near the
    # machine's count, it is bound by CPU; well under, by waiting)
    cores_busy: float | None = None
    # CPU of the other side's own processes during this side's blocks (not counted above):
    # what the anchor's blocks leave ridehail's processes doing
    others_cpu_s: dict[str, float] = field(default_factory=dict)
    # where a completed ride's time goes (ridehail only): hops()
    hops: list[dict[str, Any]] = field(default_factory=list)


def hops(results: list[RideResult]) -> list[dict[str, Any]]:
    """The time between each two events of a completed ride that follow each other, by
    the times the events were committed, over the rides: ``from`` → ``to`` (the next
    event's ``by``: the component that committed it), how many rides had that step, and
    its mean and p50 in seconds; in the order a ride meets them. A step that ends in an
    api event is the client's (it reads the last event, then calls the API); one that
    ends in the worker's is the trigger, Temporal and the worker's."""
    gaps: dict[tuple[str, str, str], list[float]] = {}
    order: dict[tuple[str, str, str], float] = {}
    for r in results:
        if r.status != RideStatus.COMPLETED or len(r.events) < 2:
            continue
        first = r.events[0][2]
        for (a, _, at), (b, by, bt) in pairwise(r.events):
            key = (a, b, by)
            gaps.setdefault(key, []).append((bt - at).total_seconds())
            order[key] = order.get(key, 0.0) + (at - first).total_seconds()
    out = []
    for key, values in sorted(gaps.items(), key=lambda kv: order[kv[0]] / len(kv[1])):
        q = percentiles(values)
        out.append({"from": key[0], "to": key[1], "by": key[2], "rides": len(values),
                    "mean": q["mean"], "p50": q["p50"]})
    return out


def figures(name: str, results: list[RideResult], concurrency: int, elapsed: float
            ) -> RunFigures:
    completed = [r for r in results if r.status == RideStatus.COMPLETED]
    statuses: dict[str, int] = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    return RunFigures(
        name=name, rides=len(results), concurrency=concurrency, elapsed_s=elapsed,
        completed=len(completed), ended=sum(r.ended for r in results),
        rides_per_s=len(completed) / elapsed if elapsed > 0 else 0.0,
        to_assigned=percentiles([r.to_assigned_s for r in completed
                                 if r.to_assigned_s is not None]),
        to_completed=percentiles([r.to_end_s for r in completed if r.to_end_s is not None]),
        statuses=statuses, retries_409=sum(r.retries for r in results),
        errors=sorted({r.error for r in results if r.error})[:10],
        hops=hops(results),
    )


@dataclass
class BenchReport:
    ridehail: RunFigures | None = None
    baseline: RunFigures | None = None  # the anchor with ridehail's step kinds
    baseline_all_regular: RunFigures | None = None  # the anchor, every step regular
    # the steps run as local activities, by ridehail and by the same-kind anchor alike
    local_steps: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    measured: dict[str, str] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    worker_settings: dict[str, str] = field(default_factory=dict)

    @property
    def throughput_ratio(self) -> float | None:
        if self.ridehail and self.baseline and self.baseline.rides_per_s:
            return self.ridehail.rides_per_s / self.baseline.rides_per_s
        return None

    @property
    def throughput_ratio_all_regular(self) -> float | None:
        if self.ridehail and self.baseline_all_regular and \
                self.baseline_all_regular.rides_per_s:
            return self.ridehail.rides_per_s / self.baseline_all_regular.rides_per_s
        return None

    @property
    def cpu_ratio(self) -> float | None:
        """The anchor's CPU per ride over ridehail's: less noisy than the throughput ratio
        on a shared machine, and what it tends to when the machine is the limit."""
        if self.ridehail and self.baseline and self.ridehail.cpu_per_ride_s \
                and self.baseline.cpu_per_ride_s:
            return self.baseline.cpu_per_ride_s / self.ridehail.cpu_per_ride_s
        return None

    def p50_ratio(self, key: str) -> float | None:
        if not (self.ridehail and self.baseline):
            return None
        mine = getattr(self.ridehail, key)["p50"]
        theirs = getattr(self.baseline, key)["p50"]
        return mine / theirs if mine and theirs else None

    @property
    def ok(self) -> bool:
        return all(v.get("ok", True) for v in self.checks.values() if isinstance(v, dict))

    def as_dict(self) -> dict[str, Any]:
        return {
            "throughput_ratio": self.throughput_ratio,
            "throughput_ratio_all_regular": self.throughput_ratio_all_regular,
            "p50_to_assigned_ratio": self.p50_ratio("to_assigned"),
            "p50_to_completed_ratio": self.p50_ratio("to_completed"),
            "cpu_ratio": self.cpu_ratio,
            "ok": self.ok,
            "ridehail": ({**asdict(self.ridehail), "local_steps": self.local_steps}
                         if self.ridehail else None),
            "baseline": asdict(self.baseline) if self.baseline else None,
            "anchor": ({"local_steps": self.local_steps,
                        "all_regular": asdict(self.baseline_all_regular)
                        if self.baseline_all_regular else None}
                       if self.baseline else None),
            "checks": self.checks,
            "measured": self.measured,
            "worker_settings": self.worker_settings,
            "machine": self.machine,
        }


def print_hops(steps: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="where a ride's time goes (between events, by commit time)",
                  title_justify="left")
    table.add_column("step (ride. events)")
    table.add_column("by")
    for name in ("rides", "mean (ms)", "p50 (ms)"):
        table.add_column(name, justify="right")
    for h in steps:
        step = f"{h['from'].removeprefix('ride.')} → {h['to'].removeprefix('ride.')}"
        table.add_row(step, h["by"], str(h["rides"]), _ms(h["mean"]), _ms(h["p50"]))
    console.print(table)


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v * 1000:,.0f}"


def print_report(report: BenchReport, console: Console) -> None:
    runs = [r for r in (report.ridehail, report.baseline, report.baseline_all_regular)
            if r is not None]
    console.print(_report_table(report, runs))
    if report.ridehail and report.ridehail.hops:
        print_hops(report.ridehail.hops, console)
    _print_notes(report, console)
    _print_outcome(report, runs, console)


Row = Callable[..., None]  # (label, a value per side, the ratio if any) → a row added


def _report_table(report: BenchReport, runs: list[RunFigures]) -> Table:
    """A column per side, and one for the ratios when both sides ran."""
    table = Table(title="ridehail bench", title_justify="left")
    table.add_column("")
    for r in runs:
        table.add_column(r.name, justify="right")
    if report.throughput_ratio is not None:
        table.add_column("ridehail ÷ baseline", justify="right")

    def row(label: str, values: list[str], ratio: str = "") -> None:
        table.add_row(label, *values, *([ratio] if report.throughput_ratio is not None else []))

    _speed_rows(row, report, runs)
    _process_rows(row, runs)
    _cost_rows(row, report, runs)
    return table


def _ratio(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def _speed_rows(row: Row, report: BenchReport, runs: list[RunFigures]) -> None:
    """Rides, throughput and latency; the time taken, in how many blocks; ridehail's
    retries and events."""
    row("rides completed", [f"{r.completed}/{r.rides}" for r in runs])
    row("rides/s", [f"{r.rides_per_s:.2f}" for r in runs], _ratio(report.throughput_ratio))
    for key, label in (("to_assigned", "to driver_assigned"), ("to_completed", "to completed")):
        for p in ("p50", "p95", "p99"):
            row(f"{label} {p} (ms)", [_ms(getattr(r, key)[p]) for r in runs],
                _ratio(report.p50_ratio(key)) if p == "p50" else "")
    row("elapsed (s)", [f"{r.elapsed_s:.1f}" for r in runs])
    if report.ridehail:
        row("  of it, consumers catching up (s)",
            [f"{report.ridehail.drain_s:.1f}", *[""] * (len(runs) - 1)])
    row("blocks (alternating)", [str(r.blocks) for r in runs])
    if report.ridehail:
        pad = [""] * (len(runs) - 1)
        row("409 retries (read model behind)", [str(report.ridehail.retries_409), *pad])
        ev = report.ridehail.events_per_s
        row("RIDES events/s", ["—" if ev is None else f"{ev:.0f}", *pad])


def _process_rows(row: Row, runs: list[RunFigures]) -> None:
    """Each process's CPU time and peak memory, and the other side's CPU meanwhile."""
    roles = sorted({p.role for r in runs for p in r.processes})
    for role in roles:
        cpu = []
        mem = []
        for r in runs:
            p = next((p for p in r.processes if p.role == role), None)
            cpu.append("—" if p is None else f"{p.cpu_s:.1f}")
            mem.append("—" if p is None else f"{p.peak_rss_mb:.0f}")
        row(f"{role} CPU s", cpu)
        row(f"{role} peak RSS (MB)", mem)
    if any(r.others_cpu_s for r in runs):
        row("other side meanwhile (CPU s)",
            [", ".join(f"{k} {v:.1f}" for k, v in r.others_cpu_s.items()) or "—" for r in runs])


def _cost_rows(row: Row, report: BenchReport, runs: list[RunFigures]) -> None:
    """CPU per ride, cores busy and the machine's load around each side."""
    row("CPU per ride, all measured (ms)",
        ["—" if r.cpu_per_ride_s is None else f"{r.cpu_per_ride_s * 1000:.0f}" for r in runs],
        _ratio(report.cpu_ratio) + " (base ÷ rh)" if report.cpu_ratio else "")
    row(f"cores busy (of {os.cpu_count()})",
        ["—" if r.cores_busy is None else f"{r.cores_busy:.2f}" for r in runs])
    row("load average before → after",
        [f"{r.load_before[0]:.1f} → {r.load_after[0]:.1f}" if r.load_before and r.load_after
         else "—" for r in runs])


def _print_notes(report: BenchReport, console: Console) -> None:
    """How the sides ran: the local activities, the all-regular ratio, what each role's
    figures were read from and the worker's settings."""
    if report.baseline is not None:
        console.print(f"[dim]local activities, ridehail and the baseline alike: "
                      f"{', '.join(report.local_steps) or 'none'}; baseline_all_regular runs "
                      "every step as a regular activity[/]")
    if report.throughput_ratio_all_regular is not None:
        console.print(f"throughput ratio against the all-regular anchor: "
                      f"{report.throughput_ratio_all_regular:.2f}")
    for role, what in report.measured.items():
        console.print(f"[dim]{role}: {what}[/]")
    if report.worker_settings:
        console.print("[dim]worker settings (both): " + ", ".join(
            f"{k}={v}" for k, v in report.worker_settings.items()) + "[/]")


def _print_outcome(report: BenchReport, runs: list[RunFigures], console: Console) -> None:
    """The checks, the errors of the rides and the headline ratio."""
    for name, check in report.checks.items():
        mark = "[green]ok  [/]" if check.get("ok") else "[red]FAIL[/]"
        detail = {k: v for k, v in check.items() if k not in ("ok", "checks") and v}
        console.print(f"{mark} {name}" + (f"  {detail}" if detail else ""))
    for r in runs:
        for e in r.errors:
            console.print(f"[red]{r.name}:[/] {e}")
    if report.throughput_ratio is not None:
        console.print(f"[bold]throughput ratio (ridehail ÷ bare Temporal): "
                      f"{report.throughput_ratio:.2f}[/]")
