"""``ridehail bench`` and its bare-Temporal anchor, on a small workload against the
in-process stack: the figures are there and sane, and the end-of-run checks ran."""

from __future__ import annotations

import io
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console
from sqlmodel import select

from ridehail.load import soak
from ridehail.load.baseline import ridehail_worker_settings
from ridehail.load.bench import blocks_of, percentiles, print_report, run_bench
from ridehail.load.benchfigures import BenchReport, RideResult, RunFigures, hops
from ridehail.load.city import City
from ridehail.load.soak import (
    ProcessMemory,
    Sample,
    SoakReport,
    StreamSize,
    _per_minute,
    default_rate,
    remember_throughput,
    run_soak,
)
from ridehail.load.soakprint import print_soak
from store.tables import Ride
from tests.support.stack import Stack
from workflows.steps import runs_locally

RIDES = 5


def ordered(p: dict[str, float | None]) -> bool:
    values = [p["p50"], p["p95"], p["p99"], p["max"]]
    return all(v is not None and v > 0 for v in values) and values == sorted(values)


def test_percentiles() -> None:
    p = percentiles([float(i) for i in range(1, 101)])
    assert (p["p50"], p["p99"], p["max"]) == (50.5, 99.01, 100.0)
    assert percentiles([])["p50"] is None
    assert percentiles([2.0])["p99"] == 2.0


def test_hops_time_each_step_of_completed_rides_in_ride_order() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)

    def ride(status: str, *steps: tuple[str, str, float]) -> RideResult:
        return RideResult(status, events=[(k, by, t + timedelta(seconds=s))
                                          for k, by, s in steps])

    done = [ride("completed", ("ride.requested", "api", 0), ("ride.fare_quoted", "worker", 1),
                 ("ride.completed", "worker", 4)),
            ride("completed", ("ride.requested", "api", 10), ("ride.fare_quoted", "worker", 13),
                 ("ride.completed", "worker", 14))]
    failed = ride("failed", ("ride.requested", "api", 0), ("ride.failed", "worker", 9))
    steps = hops([*done, failed])
    assert [(h["from"], h["to"], h["by"], h["rides"]) for h in steps] == [
        ("ride.requested", "ride.fare_quoted", "worker", 2),
        ("ride.fare_quoted", "ride.completed", "worker", 2)]
    assert steps[0]["mean"] == 2.0 and steps[1]["mean"] == 2.0
    assert hops([failed]) == []


def test_blocks_of() -> None:
    assert blocks_of(300, 3) == [100, 100, 100]
    assert blocks_of(5, 3) == [2, 2, 1]
    assert blocks_of(2, 3) == [1, 1]
    assert blocks_of(7, 1) == [7]


def test_each_minute_of_a_soak_gives_memory_at_its_end_and_cpu_per_ride_started_in_it(
        ) -> None:
    # two rides a minute for two and a half minutes; a process read about every 30 s
    # whose memory levels off and whose CPU per ride quadruples in the second minute
    started = [(t, RideResult("completed", 1.0, 2.0)) for t in (0, 30, 60, 90, 120, 130)]
    readings = [(0, 100, 0.0), (30, 110, 0.1), (61, 120, 0.2), (90, 121, 0.6),
                (121, 122, 1.0), (150, 122, 1.3)]
    samples = [Sample(t, "nats", rss, cpu) for t, rss, cpu in readings]
    samples += [Sample(t, "api", 50, 0.0) for t, _, _ in readings]  # an idle one
    first, second, last = _per_minute(started, 150, samples)
    assert first["rss_mb"] == {"nats": 120, "api": 50}
    assert first["cpu_ms_per_ride"] == {"nats": 100.0, "api": 0.0}  # 0.2 s for 2 rides
    assert second["rss_mb"]["nats"] == 122 and second["cpu_ms_per_ride"]["nats"] == 400.0
    # the last, partial minute ends with the soak
    assert not last["whole"] and last["rides"] == 2
    assert last["rss_mb"]["nats"] == 122 and last["cpu_ms_per_ride"]["nats"] == 150.0
    # a soak with no readings still reports its minutes
    [only] = _per_minute(started[:1], 30)
    assert only["rss_mb"] == {} and only["cpu_ms_per_ride"] == {}

    report = SoakReport(150, 2 / 60, "--rate", 30, rides=6, per_minute=[first, second, last],
                        processes={"nats": ProcessMemory(1, 120, 122, 122)},
                        streams={"RIDES": StreamSize(3.94, 4.12, 6000),
                                 "DLQ": StreamSize(None, 0.0, 0)})
    out = io.StringIO()
    print_soak(report, Console(file=out, width=200))
    assert "by minute: RSS 120, 122, 122 MB; CPU per ride 100, 400, 150 ms" in out.getvalue()
    # what each stream stores, after the warm-up and at the end ("—": not read then)
    assert "stored RIDES 3.9 → 4.1 MiB, DLQ — → 0.0 MiB" in out.getvalue()


async def test_bench_and_anchor_report_sane_figures(stack: Stack) -> None:
    out = io.StringIO()
    report = await run_bench(stack.settings, rides=RIDES, drivers=3, concurrency=2,
                             baseline=True, console=Console(file=out, width=120))

    ours, anchor = report.ridehail, report.baseline
    assert ours is not None and anchor is not None
    for run in (ours, anchor):
        assert (run.rides, run.completed, run.ended) == (RIDES, RIDES, RIDES), run.errors
        assert run.rides_per_s > 0 and run.elapsed_s > 0
        assert ordered(run.to_assigned) and ordered(run.to_completed)
        assert run.to_assigned["p50"] < run.to_completed["p50"]  # type: ignore[operator]
    assert ours.events_per_s and ours.events_per_s > 0
    # the two sides ran in alternating blocks; ridehail's time includes its consumers
    # catching up at the end of each block
    assert ours.blocks == anchor.blocks == 3
    assert 0 <= ours.drain_s < ours.elapsed_s and anchor.drain_s == 0

    figures = json.loads(json.dumps(report.as_dict(), default=str))
    await _check_the_anchor(stack, report, figures)
    _check_the_processes(report, ours, anchor)
    await _check_the_end_of_run_checks(stack, report)
    _check_the_hops(figures)

    print_report(report, Console(file=out, width=120))
    text = out.getvalue()
    assert "throughput ratio" in text and "rides/s" in text
    assert "where a ride's time goes" in text


async def _check_the_anchor(stack: Stack, report: BenchReport, figures: dict[str, Any]
                            ) -> None:
    """The throughput ratio, and the anchor's two kinds of ride, each scheduling the
    activities its kind says, with ridehail's worker settings."""
    ours, anchor = report.ridehail, report.baseline
    assert ours is not None and anchor is not None
    # the headline: ridehail's throughput over the anchor's, from the same run
    assert report.throughput_ratio == ours.rides_per_s / anchor.rides_per_s
    assert figures["throughput_ratio"] == report.throughput_ratio
    # the anchor runs ridehail's own step kinds, read from its step table; the
    # all-regular anchor is the second figure
    assert figures["anchor"]["local_steps"] == figures["ridehail"]["local_steps"] == [
        s for s in ("quote_fare", "authorize_payment", "reserve_driver", "assign_driver",
                    "capture_payment", "release_driver", "complete_ride") if runs_locally(s)]
    assert "authorize_payment" not in figures["anchor"]["local_steps"]
    regular = report.baseline_all_regular
    assert regular is not None and regular.completed == RIDES
    assert figures["throughput_ratio_all_regular"] == ours.rides_per_s / regular.rides_per_s
    assert figures["anchor"]["all_regular"]["completed"] == RIDES
    scheduled: dict[str, set[int]] = {"same": set(), "regular": set()}
    async for wf in stack.temporal.list_workflows("WorkflowType='BaselineRideWorkflow'"):
        kind = "same" if "-same-" in wf.id else "regular"
        history = await stack.temporal.get_workflow_handle(wf.id).fetch_history()
        scheduled[kind].add(sum(1 for e in history.events if e.HasField(
            "activity_task_scheduled_event_attributes")))
    assert scheduled == {"same": {2}, "regular": {7}}  # authorize and capture; all seven
    assert figures["p50_to_completed_ratio"] > 0

    # the anchor ran with ridehail's worker settings
    settings = await ridehail_worker_settings(stack.temporal)
    assert report.worker_settings["max_concurrent_activities"] == str(
        settings["max_concurrent_activities"])


def _check_the_processes(report: BenchReport, ours: RunFigures, anchor: RunFigures) -> None:
    """Each side's processes were measured, and what they cost."""
    # the API runs in this process here; its CPU time and memory were read
    api = next(p for p in ours.processes if p.role == "api")
    assert api.pid == os.getpid() and api.cpu_s > 0 and api.peak_rss_mb > 10
    assert "this bench client" in report.measured["api"]
    assert {p.role for p in ours.processes} >= {"api", "temporal", "nats"}
    assert {p.role for p in anchor.processes} == {"temporal", "bench"}
    assert ours.cpu_per_ride_s and anchor.cpu_per_ride_s and report.cpu_ratio
    for side in (ours, anchor):  # the CPU the side used, per second of its run
        assert side.cores_busy == pytest.approx(
            sum(p.cpu_s for p in side.processes) / side.elapsed_s)
        assert 0 < side.cores_busy <= (os.cpu_count() or 1) * 1.05


async def _check_the_end_of_run_checks(stack: Stack, report: BenchReport) -> None:
    # the checks ran and passed (the session's Temporal server also holds other tests'
    # rides, which this test's database never saw: audit check 3 is read for ours only)
    assert report.checks["every ride ended"]["ok"]
    assert report.checks["consumers caught up"]["ok"]
    assert report.checks["nothing new in the DLQ"]["ok"]
    audit = report.checks["ridehail audit"]["checks"]
    assert audit["1"] and audit["2"] and audit["4"] and audit["5"]
    rides = stack.query(lambda s: list(s.exec(select(Ride))))
    assert len(rides) == RIDES and {r.status for r in rides} == {"completed"}


def _check_the_hops(figures: dict[str, Any]) -> None:
    # where a ride's time goes: every step of the happy path, each by whom it ends
    steps = {(h["from"], h["to"]): h for h in figures["ridehail"]["hops"]}
    assert steps[("ride.requested", "ride.payment_authorized")]["by"] == "worker"
    assert steps[("ride.driver_offered", "ride.driver_accepted")]["by"] == "api"
    assert steps[("ride.payment_captured", "ride.completed")]["rides"] == RIDES
    assert all(h["mean"] >= 0 and h["p50"] >= 0 for h in steps.values())
    assert figures["ridehail"]["hops"][0]["from"] == "ride.requested"
    assert not figures["baseline"]["hops"]  # the anchor has no events to time


async def test_a_short_soak_reports_memory_per_process_and_latency_per_minute(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    # no full bench on this data dir yet: the rate must be given
    assert default_rate(stack.settings) is None
    remember_throughput(stack.settings, 2.0)
    rate, rate_from = default_rate(stack.settings)  # type: ignore[misc]
    assert rate == pytest.approx(1.4) and "70%" in rate_from

    # what the streams and the pruned tables keep is read each "minute": here, 2 s
    monkeypatch.setattr(soak, "MINUTE_S", 2.0)
    report = await run_soak(stack.settings, duration_s=6, rate=1.0, rate_from="--rate",
                            drivers=3, city=City(), seed=3, ride_timeout_s=60,
                            console=Console(file=out, width=120))
    assert report.rides == 6 and report.statuses == {"completed": 6}
    assert report.checks["every ride ended"]["ok"] and report.checks["consumers caught up"]["ok"]
    [minute] = report.per_minute  # a partial first minute
    assert minute["rides"] == 6 and not minute["whole"] and minute["to_completed"]["p95"]
    # this process is the API and the bench client here; both were sampled
    api = report.processes["api"]
    assert api.rss_warm_mb and api.rss_end_mb and api.rss_growth_pct is not None
    # and each minute, every process's memory at its end and its CPU per ride
    assert set(minute["rss_mb"]) >= {"api", "temporal", "nats"}
    assert minute["rss_mb"]["api"] > 10 and minute["cpu_ms_per_ride"]["api"] > 0
    figures = json.loads(json.dumps(report.as_dict(), default=str))
    assert set(figures["rss_growth_pct"]) >= {"api", "temporal", "nats"}
    assert figures["soak"]["rate_per_s"] == 1.0
    # what the streams store: the rides' events went to RIDES during the soak
    assert set(figures["streams"]) == {"RIDES", "DRIVERS", "NOTIFICATIONS", "DLQ"}
    rides = figures["streams"]["RIDES"]
    assert rides["end_mib"] > rides["warm_mib"] > 0 and rides["end_messages"] >= 6 * 10
    # memory is judged over the second half, and the minutes' readings level off or not
    assert api.rss_half_mb and api.rss_second_half_pct is not None
    assert set(figures["rss_second_half_pct"]) >= {"api", "temporal", "nats"}
    assert len(report.kept_by_minute) >= 2
    first, last = report.kept_by_minute[0], report.kept_by_minute[-1]
    assert last["streams"]["RIDES"]["messages"] > first["streams"]["RIDES"]["messages"] > 0
    assert last["rows"]["processed_events"] > 0 and "idempotency_keys" in last["rows"]
    assert minute["streams"]["RIDES"]["messages"] > 0 and "offers" in minute["rows"]
    print_soak(report, Console(file=out, width=200))
    assert "RSS" in out.getvalue() and "stored RIDES" in out.getvalue()
    assert "processed_events by minute" in out.getvalue() and "second half" in out.getvalue()
