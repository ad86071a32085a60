"""``ridehail bench``: options, settings and errors as a person running the bench, or its
soak (``--duration``), sees them. The work is in ``ridehail.load.bench`` and
``ridehail.load.soak`` (its printing ``ridehail.load.soakprint``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from infra.config import Settings
from ridehail.commands.options import json_option
from ridehail.load.apiclient import ApiError
from ridehail.load.bench import BenchReport, print_report, run_bench, unreachable
from ridehail.load.city import City
from ridehail.load.soak import (
    SoakReport,
    default_rate,
    remember_throughput,
    run_soak,
)
from ridehail.load.soakprint import print_soak
from ridehail.terminal import console, settings_or_exit, with_secret


def bench(
    rides: Annotated[int, typer.Option(min=1, help="rides to run")] = 300,
    drivers: Annotated[int, typer.Option(min=1, help="drivers online")] = 100,
    concurrency: Annotated[int, typer.Option(min=1, help="rides in flight at once")] = 20,
    baseline: Annotated[bool, typer.Option(
        "--baseline", help="also run the bare-Temporal anchor and print the ratio")] = False,
    baseline_only: Annotated[bool, typer.Option(
        "--baseline-only", help="run the anchor alone")] = False,
    rounds: Annotated[int, typer.Option(
        min=1, help="with --baseline: alternate the two sides in this many blocks")] = 3,
    json_path: Annotated[Path | None, json_option(
        "write the figures here (headline: throughput_ratio)")] = None,
    centre: Annotated[str, typer.Option(help="the city's centre, LAT,LNG")]
        = "40.758,-73.9855",
    radius_km: Annotated[float, typer.Option(help="the city's radius")] = 3.0,
    seed: Annotated[int, typer.Option(help="random seed of the trips")] = 7,
    ride_timeout: Annotated[float, typer.Option(help="seconds a ride may take")] = 120.0,
    duration: Annotated[float | None, typer.Option(
        min=1, help="a soak instead: a steady load for this many seconds")] = None,
    rate: Annotated[float | None, typer.Option(
        min=0.01, help="with --duration: rides started a second (default: 70% of "
                       "the last full bench's throughput)")] = None,
) -> None:
    """Run a fixed workload through the HTTP API against the running stack (`ridehail
    dev`), report throughput, latency and cost, and check the result; with
    --baseline, the same workload on bare Temporal too. With --duration, a soak:
    memory growth per process, latency per minute, the same checks."""
    settings = _ready(baseline_only)
    city = _city(centre, radius_km)
    _stack_answers(settings, api=not baseline_only)
    out = Console()
    if duration is not None:
        _soak(settings, duration, rate, drivers, city, seed, ride_timeout, json_path, out)
    try:
        report = asyncio.run(run_bench(
            settings, rides=rides, drivers=drivers, concurrency=concurrency,
            baseline=baseline or baseline_only, ridehail=not baseline_only, rounds=rounds,
            city=city, seed=seed, ride_timeout_s=ride_timeout, console=out))
    except (OSError, ApiError) as e:
        console.print(f"[red]error:[/] {e} — is the stack running (`ridehail dev`), "
                      "with the same RIDEHAIL_* settings?")
        raise typer.Exit(1) from None
    print_report(report, out)
    if report.ridehail is not None and report.ok:
        remember_throughput(settings, report.ridehail.rides_per_s)
    _write_figures(json_path, report, out)
    raise typer.Exit(0 if report.ok else 1)


def _ready(baseline_only: bool) -> Settings:
    """The settings, with the JWT secret unless only the anchor runs (it calls no API)."""
    settings = settings_or_exit()
    return settings if baseline_only else with_secret(settings)


def _city(centre: str, radius_km: float) -> City:
    """The city of ``--centre`` and ``--radius-km``; one that cannot be ends the command."""
    try:
        return City.parse(centre, radius_km)
    except (ValueError, RuntimeError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None


def _stack_answers(settings: Settings, *, api: bool) -> None:
    """End the command if the servers the bench needs do not answer."""
    down = unreachable(settings, api=api)
    if down:
        console.print(f"[red]error:[/] nothing answers at {', '.join(down)}; start the "
                      "stack (`ridehail dev`) or point the RIDEHAIL_* settings at it")
        raise typer.Exit(1)


def _write_figures(json_path: Path | None, report: BenchReport | SoakReport,
                   out: Console) -> None:
    """``--json``: every figure, to the file it names."""
    if json_path is not None:
        json_path.write_text(json.dumps(report.as_dict(), indent=2, default=str))
        out.print(f"[dim]figures written to {json_path}[/]")


def _soak(settings: Settings, duration: float, rate: float | None, drivers: int, city: City,
          seed: int, ride_timeout: float, json_path: Path | None, out: Console) -> None:
    """``ridehail bench --duration``: run the soak, report it, exit."""
    if rate is None:
        found = default_rate(settings)
        if found is None:
            console.print("[red]error:[/] no full bench has run on this data dir yet: give "
                          "--rate, or run `ridehail bench` first")
            raise typer.Exit(2)
        rate, rate_from = found
    else:
        rate_from = "--rate"
    try:
        report = asyncio.run(run_soak(settings, duration_s=duration, rate=rate,
                                      rate_from=rate_from, drivers=drivers, city=city,
                                      seed=seed, ride_timeout_s=ride_timeout, console=out))
    except (OSError, ApiError) as e:
        console.print(f"[red]error:[/] {e} — is the stack running (`ridehail dev`)?")
        raise typer.Exit(1) from None
    print_soak(report, out)
    _write_figures(json_path, report, out)
    raise typer.Exit(0 if report.ok else 1)
