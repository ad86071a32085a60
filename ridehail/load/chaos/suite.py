"""``ridehail chaos``: the mixed workload on the production shape, one fault at a time,
and after each a judgement of every ride and the audit.

Faults: SIGKILL and restart of each component process; SIGKILL and restart of
nats-server and of the Temporal server (on its persisted database); SIGSTOP/SIGCONT of
NATS and of Temporal (10 s, 60 s and 180 s); a restart of the suite's own PostgreSQL;
and, on a three-node NATS cluster with R3 streams, SIGKILL and restart of one node."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import tempfile
import time
from collections import Counter as Tally
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ridehail.load.apiclient import Api
from ridehail.load.chaos.shape import COMPONENTS, Shape
from ridehail.load.chaos.workload import RideRecord, Workload
from ridehail.processes.devstack import ridehail_command

KILL_DOWN_S = 3.0  # how long a killed process stays down before it is restarted
WARM_UP_S = 4.0  # the fault comes this long after the round's first requests
AUDIT_PATIENCE_S = 150.0  # the audit may need the outbox grace and visibility to settle


@dataclass(frozen=True)
class Fault:
    kind: str  # "kill", "stop" or "restart"
    target: str  # a component, "nats-0", "nats-1", "temporal" or "postgres"
    seconds: float = 0.0  # frozen for (stop)
    cluster: bool = False

    @property
    def name(self) -> str:
        if self.kind == "stop":
            return f"SIGSTOP {self.target} {self.seconds:.0f}s"
        if self.kind == "restart":
            return f"restart {self.target}"
        return f"SIGKILL {self.target}" + (" (cluster node)" if self.cluster else "")


def faults(quick: bool) -> list[Fault]:
    stops = (10.0,) if quick else (10.0, 60.0, 180.0)
    return [
        *(Fault("kill", c) for c in COMPONENTS),
        Fault("kill", "nats-0"), Fault("kill", "temporal"),
        *(Fault("stop", t, s) for t in ("nats-0", "temporal") for s in stops),
        Fault("restart", "postgres"),
        Fault("kill", "nats-1", cluster=True),
    ]


@dataclass
class RoundResult:
    fault: str
    rides: int
    outcomes: dict[str, int]
    recovered_s: float | None  # from the fault's end to the next ride that ended
    refused: int
    violations: list[str] = field(default_factory=list)


async def inject(shape: Shape, fault: Fault) -> tuple[float, float]:
    """Apply the fault; returns when it began and when it ended (monotonic)."""
    began = time.monotonic()
    if fault.kind == "restart":  # postgres: stopped as a crash leaves it, started again
        await asyncio.to_thread(shape.postgres.restart)
    elif fault.kind == "stop":
        pid = shape.pid_of(fault.target)
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(fault.seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
    else:
        os.kill(shape.pid_of(fault.target), signal.SIGKILL)
        await asyncio.sleep(KILL_DOWN_S)
        await shape.restart(fault.target)
    return began, time.monotonic()


def judge(rec: RideRecord) -> list[str]:
    """What this ride's end says against what its rider and drivers did."""
    final = rec.final or {}
    status = final.get("status", "unknown")
    who = f"ride {rec.ride_id or '(not booked)'} ({rec.plan})"
    if status not in ("completed", "cancelled", "failed"):
        return [f"{who}: not finished, {status}"]
    out: list[str] = []
    pay = final.get("payment") or {}
    fare = final.get("fare") or {}
    authorized, captured = float(pay.get("authorized") or 0), float(pay.get("captured") or 0)
    if captured > authorized:
        out.append(f"{who}: captured {captured} > authorized {authorized}")
    if rec.completed_report and status != "completed":
        out.append(f"{who}: the driver completed the trip but the ride is {status}")
    if status == "completed":
        if not rec.completed_report:
            out.append(f"{who}: completed without the driver's report")
        elif fare.get("final") is None or captured != float(fare["final"]):
            out.append(f"{who}: completed, captured {captured}, final fare {fare.get('final')}")
    if rec.rider_cancelled and status not in ("cancelled", "completed"):
        out.append(f"{who}: the rider cancelled but the ride is {status}")
    if status == "cancelled" and not rec.rider_cancelled:
        out.append(f"{who}: cancelled though its rider never cancelled")
    fee = fare.get("cancellation_fee")
    if fee is not None and rec.plan != "rider_cancel_late":
        out.append(f"{who}: a cancellation fee of {fee} that was not due")
    if status == "failed" and final.get("failure_reason") != "no_driver_available":
        out.append(f"{who}: failed, {final.get('failure_reason')}")
    return out


def audit(shape: Shape) -> dict[str, Any]:
    done = subprocess.run(ridehail_command("audit", "--json"),
                          env=shape.env, capture_output=True, text=True, timeout=300)
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return {"ok": False, "checks": [], "error": done.stderr[-500:]}


async def settled_audit(shape: Shape) -> list[str]:
    """The audit's violations once it has had time to settle (empty when it passes)."""
    deadline = time.monotonic() + AUDIT_PATIENCE_S
    while True:
        report = await asyncio.to_thread(audit, shape)
        if report.get("ok"):
            return []
        if time.monotonic() > deadline:
            found = [f"audit {c['number']}. {v}" for c in report.get("checks", [])
                     if not c["ok"] for v in c["violations"]]
            return found or [f"audit failed: {report.get('error', report)}"]
        await asyncio.sleep(5)


async def play_round(shape: Shape, api: Api, fault: Fault, index: int, *, rides: int,
                     drivers: int, concurrency: int) -> RoundResult:
    work = Workload(api, rides=rides, drivers=drivers, concurrency=concurrency,
                    free_cancel_s=shape.settings.free_cancel_s, seed=index, tag=f"c{index}")
    window: list[float] = []

    async def during() -> None:
        await asyncio.sleep(WARM_UP_S)
        window.extend(await inject(shape, fault))

    await work.run(during)
    began, ended = window
    finished = [rec for rec in work.records if rec.final]
    violations = [v for rec in work.records for v in judge(rec)]
    violations += await settled_audit(shape)
    await work.drivers_offline()  # this round's drivers leave the city
    refused = sum(1 for t in work.counters.refused_times if t >= began)
    outcomes = Tally(str((rec.final or {}).get("status")) for rec in finished)
    after = [rec.finished_at - ended for rec in work.records
             if rec.finished_at is not None and rec.finished_at >= ended]
    return RoundResult(fault.name, len(work.records), dict(outcomes),
                       round(min(after), 1) if after else None, refused, violations)


async def run_suite(*, quick: bool, rides: int, drivers: int, concurrency: int,
                    only: list[str] | None, say: Any, root: Path | None = None
                    ) -> list[RoundResult]:
    chosen = [f for f in faults(quick) if not only or any(o in f.name for o in only)]
    results: list[RoundResult] = []
    root = root or Path(tempfile.mkdtemp(prefix="ridehail-chaos-"))
    root.chmod(0o755)  # PostgreSQL runs as its own user and must reach its directory
    for cluster in (False, True):
        mine = [f for f in chosen if f.cluster == cluster]
        if not mine:
            continue
        shape = Shape(root / ("cluster" if cluster else "single"), cluster=cluster)
        say(f"starting the production shape{' (three NATS nodes, R3)' if cluster else ''} "
            f"in {shape.root}")
        try:
            await shape.start()
            api = Api(shape.api_url, shape.settings.jwt_secret or "", timeout_s=20)
            try:
                for fault in mine:
                    say(f"{fault.name}: {rides} rides, {drivers} drivers, {concurrency} at a time")
                    started = time.monotonic()
                    result = await play_round(shape, api, fault, len(results), rides=rides,
                                              drivers=drivers, concurrency=concurrency)
                    results.append(result)
                    say(f"  {'ok' if not result.violations else 'VIOLATED'} in "
                        f"{time.monotonic() - started:.0f}s: {result.outcomes}, "
                        f"{result.refused} requests refused")
                    for v in result.violations[:10]:
                        say(f"    - {v}")
            finally:
                await api.aclose()
        finally:
            await asyncio.to_thread(shape.stop)
    return results
