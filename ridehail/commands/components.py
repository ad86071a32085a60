"""The long-running commands: ``ridehail dev`` (the whole stack on this machine) and each
component alone, ``api``, ``worker``, ``consumers`` and ``relay``, run until SIGINT or
SIGTERM."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from infra.config import Settings
from ridehail.commands.oneshot import unfit_servers_exit
from ridehail.commands.options import DataDir, Verbose
from ridehail.terminal import console, settings_or_exit, with_secret

if TYPE_CHECKING:
    from ridehail.processes.components import Runtime

# Collect the youngest generation of cyclic garbage after this many new container objects
# (Python's default: 700). A request, an event or a workflow activation allocates many,
# nearly all freed at once by reference counting, so at the default the collector runs
# often and finds little; at this threshold it runs far less often, and the garbage it
# finds is collected a little later. docs/BENCHMARKS.md has what it saves under load.
GC_FIRST_GENERATION = 50_000

RUNNING = "running"  # what a component prints once it runs (ridehail dev waits for it)


def run_service(main: Coroutine[Any, Any, None]) -> None:
    """Run a long-running process's main coroutine on uvloop, the faster event loop the
    API, the worker and the consumers all spend much of their time in."""
    import uvloop

    gc.set_threshold(GC_FIRST_GENERATION, *gc.get_threshold()[1:])
    with unfit_servers_exit():
        uvloop.run(main)


def _logging(verbose: bool) -> None:
    from infra.logs import configure_logging

    configure_logging(verbose, settings_or_exit(find_dev=False).log_format)


def dev(
    data_dir: DataDir = None,
    api_port: Annotated[int | None, typer.Option(
        help="the port the API listens on (RIDEHAIL_API_PORT)")] = None,
    verbose: Verbose = False,
) -> None:
    """Run the whole stack on this machine: Temporal dev server, nats-server, the worker,
    the consumers, the outbox relay and the API."""
    from ridehail.processes.devlock import data_dir_lock
    from ridehail.processes.devstack import DevStackError, run_dev

    _logging(verbose)
    # (not the addresses of a dev running on the data dir: that one is refused below)
    settings = settings_or_exit(data_dir, find_dev=False, api_port=api_port)

    def say(line: str) -> None:
        console.print(f"[bold cyan]ridehail[/] {escape(line)}", soft_wrap=True)

    from infra.telemetry import shutdown_tracing

    try:
        # the data dir's lock first: a second dev on it is refused having changed nothing
        with data_dir_lock(settings):
            run_service(run_dev(with_secret(settings.with_dev_secret()), say, verbose))
    except DevStackError as e:
        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        shutdown_tracing()  # the spans still buffered


def api(verbose: Verbose = False) -> None:
    """Run the HTTP API alone."""
    settings = with_secret(settings_or_exit())  # before the heavy imports: fail fast
    from ridehail.processes.components import run_api

    _run_component("api", verbose, run_api, settings)


def worker(verbose: Verbose = False) -> None:
    """Run the Temporal worker alone (task queue `rides`)."""
    from ridehail.processes.components import run_temporal_worker

    _run_component("worker", verbose, run_temporal_worker)


def consumers(
    names: Annotated[list[str] | None, typer.Argument(help="a subset; all by default")] = None,
    verbose: Verbose = False,
) -> None:
    """Run the event consumers (workflow-trigger, ride-projector, driver-projector,
    notifier), all or the ones named."""
    from ridehail.processes.components import CONSUMERS, run_consumers

    chosen = tuple(names or CONSUMERS)
    unknown = set(chosen) - set(CONSUMERS)
    if unknown:
        console.print(f"[red]error:[/] unknown consumer(s) {', '.join(sorted(unknown))}; "
                      f"choose from {', '.join(CONSUMERS)}")
        raise typer.Exit(2)
    _run_component("consumers", verbose,
                   lambda rt, stop: run_consumers(rt, stop, chosen))


def relay(verbose: Verbose = False) -> None:
    """Run the outbox relay alone: publishes events whose publish after commit failed."""
    from ridehail.processes.components import run_relay

    _run_component("relay", verbose, run_relay)


def _run_component(name: str, verbose: bool,
                   body: Callable[[Runtime, asyncio.Event], Awaitable[None]],
                   settings: Settings | None = None) -> None:
    """Run one long-running component until SIGINT/SIGTERM."""
    _logging(verbose)
    settings = settings or settings_or_exit()
    from infra.telemetry import shutdown_tracing
    from ridehail.processes.components import metrics_served, observe, run_logged, runtime
    from ridehail.processes.devstack import install_stop_handlers

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        temporal_metrics = observe(settings, name)
        async with (runtime(settings, name, temporal=name != "relay") as rt,
                    metrics_served(rt, name, temporal_metrics) as metrics_url):
            metrics = f" — metrics {metrics_url}" if metrics_url else ""
            console.print(f"[bold cyan]ridehail[/] {name} {RUNNING}{metrics} — Ctrl-C to stop",
                          soft_wrap=True)
            await run_logged(name, lambda: body(rt, stop), stop)

    try:
        run_service(main())
    finally:
        shutdown_tracing()  # the spans still buffered
