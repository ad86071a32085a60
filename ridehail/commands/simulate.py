"""``ridehail simulate``: options, settings and errors as a person running the city
simulation sees them. The work is in ``ridehail.load.simulate``."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

from ridehail.load.city import City
from ridehail.load.simstate import SimConfig, print_summary
from ridehail.load.simulate import run_simulation
from ridehail.terminal import console, settings_or_exit, with_secret


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
    from ridehail.processes.serverprocess import answering

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
