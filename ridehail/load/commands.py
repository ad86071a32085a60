"""The load tools' commands, ``ridehail bench`` and ``ridehail simulate``: options,
settings and errors as a person running them sees them. The work is in
``ridehail.load.bench`` and ``ridehail.load.simulate``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from infra.config import Settings
from ridehail.load.apiclient import ApiError
from ridehail.load.bench import BenchReport, print_report, run_bench, unreachable
from ridehail.load.city import City
from ridehail.load.simstate import SimConfig, print_summary
from ridehail.load.simulate import run_simulation
from ridehail.load.soak import default_rate, print_soak, remember_throughput, run_soak
from ridehail.terminal import console, settings_or_exit, with_secret


def register_bench(app: typer.Typer) -> None:
    """Add ``ridehail bench`` to the CLI."""

    @app.command()
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
        json_path: Annotated[Path | None, typer.Option(
            "--json", help="write the figures here (headline: throughput_ratio)")] = None,
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
        settings = settings_or_exit()
        if not baseline_only:
            settings = with_secret(settings)
        try:
            city = City.parse(centre, radius_km)
        except (ValueError, RuntimeError) as e:
            console.print(f"[red]error:[/] {e}")
            raise typer.Exit(2) from None
        down = unreachable(settings, api=not baseline_only)
        if down:
            console.print(f"[red]error:[/] nothing answers at {', '.join(down)}; start the "
                          "stack (`ridehail dev`) or point the RIDEHAIL_* settings at it")
            raise typer.Exit(1)
        out = Console()
        if duration is not None:
            _soak(settings, duration, rate, drivers, city, seed, ride_timeout, json_path, out)

        async def main() -> BenchReport:
            return await run_bench(settings, rides=rides, drivers=drivers,
                                   concurrency=concurrency, baseline=baseline or baseline_only,
                                   ridehail=not baseline_only, rounds=rounds, city=city,
                                   seed=seed,
                                   ride_timeout_s=ride_timeout, console=out)

        try:
            report = asyncio.run(main())
        except (OSError, ApiError) as e:
            console.print(f"[red]error:[/] {e} — is the stack running (`ridehail dev`), "
                          "with the same RIDEHAIL_* settings?")
            raise typer.Exit(1) from None
        print_report(report, out)
        if report.ridehail is not None and report.ok:
            remember_throughput(settings, report.ridehail.rides_per_s)
        if json_path is not None:
            json_path.write_text(json.dumps(report.as_dict(), indent=2, default=str))
            out.print(f"[dim]figures written to {json_path}[/]")
        raise typer.Exit(0 if report.ok else 1)


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
    if json_path is not None:
        json_path.write_text(json.dumps(report.as_dict(), indent=2, default=str))
        out.print(f"[dim]figures written to {json_path}[/]")
    raise typer.Exit(0 if report.ok else 1)


def register_simulate(app: typer.Typer) -> None:
    """Add ``ridehail simulate`` to the CLI."""

    @app.command()
    def simulate(
        drivers: Annotated[int, typer.Option(min=1, max=2000, help="drivers in the city")] = 30,
        rate: Annotated[float, typer.Option(
            min=0.1, help="ride requests a minute (on average, at random)")] = 12.0,
        centre: Annotated[str, typer.Option(help="the city's centre, LAT,LNG")]
            = "40.758,-73.9855",
        radius_km: Annotated[float, typer.Option(help="the city's radius")] = 3.0,
        p_accept: Annotated[float, typer.Option(
            min=0, max=1, help="chance a driver accepts an offer")] = 0.8,
        p_decline: Annotated[float, typer.Option(
            min=0, max=1, help="chance a driver declines (the rest are ignored)")] = 0.1,
        speed_kmh: Annotated[float, typer.Option(min=1, help="driving speed")] = 30.0,
        speedup: Annotated[float, typer.Option(
            min=1, help="simulated seconds per real second")] = 20.0,
        ping_s: Annotated[float, typer.Option(
            min=0.2, help="real seconds between a driver's location pings")] = 2.0,
        duration: Annotated[float | None, typer.Option(
            help="stop after this many seconds (default: at Ctrl-C)")] = None,
        seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    ) -> None:
        """Simulate a small city — drivers moving and answering offers, riders requesting
        rides — through the HTTP API of the running stack, with a live view; Ctrl-C stops
        it with a summary."""
        from ridehail.processes.devservers import answering

        settings = with_secret(settings_or_exit())
        try:
            if p_accept + p_decline > 1:
                raise ValueError("--p-accept and --p-decline add up to more than 1")
            cfg = SimConfig(city=City.parse(centre, radius_km), drivers=drivers,
                            rate_per_min=rate, p_accept=p_accept, p_decline=p_decline,
                            speed_kmh=speed_kmh, speedup=speedup, ping_s=ping_s, seed=seed)
        except (ValueError, RuntimeError) as e:
            console.print(f"[red]error:[/] {e}")
            raise typer.Exit(2) from None
        if not answering(settings.api_host, settings.api_port):
            console.print(f"[red]error:[/] the API does not answer at {settings.api_url}; "
                          "start the stack (`ridehail dev`) or set RIDEHAIL_API_PORT")
            raise typer.Exit(1)
        out = Console()
        try:
            summary = asyncio.run(run_simulation(settings, cfg, out, duration_s=duration))
        except OSError as e:
            console.print(f"[red]error:[/] {e} — is the stack running (`ridehail dev`)?")
            raise typer.Exit(1) from None
        print_summary(summary, out)
