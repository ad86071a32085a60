"""The ``ridehail`` command (CONTRACT.md section 1)."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from infra.config import Settings
from ridehail.load.chaos.command import register as register_chaos
from ridehail.load.commands import register_bench, register_simulate
from ridehail.opscli import register as register_operations
from ridehail.opscli import unfit_servers_exit
from ridehail.streamscli import register as register_streams
from ridehail.terminal import console, results, with_secret
from ridehail.terminal import settings_or_exit as _settings

app = typer.Typer(help="ridehail: event-driven ride booking on Temporal and NATS JetStream.",
                  no_args_is_help=True, add_completion=False)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="RIDEHAIL_DATA_DIR")]


# Collect the youngest generation of cyclic garbage after this many new container objects
# (Python's default: 700). A request, an event or a workflow activation allocates many,
# nearly all freed at once by reference counting. Under the bench's load the collector
# took 2% of the API process's and 4.8% of the worker's busy time at the default, and 0%
# and 1% at this (docs/BENCHMARKS.md); the garbage it finds is collected a little later.
GC_FIRST_GENERATION = 50_000


def run_service(main: Coroutine[Any, Any, None]) -> None:
    """Run a long-running process's main coroutine on uvloop, the faster event loop the
    API, the worker and the consumers all spend much of their time in."""
    import uvloop

    gc.set_threshold(GC_FIRST_GENERATION, *gc.get_threshold()[1:])
    with unfit_servers_exit():
        uvloop.run(main)


def _logging(verbose: bool) -> None:
    from infra.logs import configure_logging

    configure_logging(verbose, _settings().log_format)


@app.command()
def dev(
    data_dir: DataDir = None,
    api_port: Annotated[int | None, typer.Option(help="RIDEHAIL_API_PORT")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the whole stack on this machine: Temporal dev server, nats-server, the worker,
    the consumers, the outbox relay and the API."""
    from ridehail.processes.devstack import DevStackError, run_dev

    _logging(verbose)
    settings = with_secret(_settings(data_dir, api_port=api_port).with_dev_secret())

    def say(line: str) -> None:
        console.print(f"[bold cyan]ridehail[/] {escape(line)}", soft_wrap=True)

    from infra.telemetry import shutdown_tracing

    try:
        run_service(run_dev(settings, say, verbose))
    except DevStackError as e:
        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        shutdown_tracing()  # the spans still buffered


@app.command()
def token(
    role: Annotated[str, typer.Option(help="rider, driver or admin")],
    sub: Annotated[str, typer.Option(help="the rider's or driver's id")],
    ttl: Annotated[int, typer.Option(help="seconds until it expires")] = 3600,
) -> None:
    """Print a signed bearer token (HS256 with RIDEHAIL_JWT_SECRET)."""
    from infra.tokens import ROLES, issue_token

    if role not in ROLES:
        console.print(f"[red]error:[/] --role must be one of {', '.join(ROLES)}")
        raise typer.Exit(2)
    if not sub.strip():
        console.print("[red]error:[/] --sub must not be empty")
        raise typer.Exit(2)
    settings = with_secret(_settings())
    print(issue_token(settings.require_jwt_secret(), role, sub, ttl))  # type: ignore[arg-type]


RUNNING = "running"  # what a component prints once it runs (ridehail dev waits for it)


def _run_component(name: str, verbose: bool, body,  # type: ignore[no-untyped-def]
                   settings: Settings | None = None) -> None:
    """Run one long-running component until SIGINT/SIGTERM."""
    _logging(verbose)
    settings = settings or _settings()
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


Verbose = Annotated[bool, typer.Option("--verbose", "-v")]


@app.command()
def api(verbose: Verbose = False) -> None:
    """Run the HTTP API alone."""
    settings = with_secret(_settings())  # before the heavy imports: fail fast
    from ridehail.processes.components import run_api

    _run_component("api", verbose, run_api, settings)


@app.command()
def worker(verbose: Verbose = False) -> None:
    """Run the Temporal worker alone (task queue `rides`)."""
    from ridehail.processes.components import run_temporal_worker

    _run_component("worker", verbose, run_temporal_worker)


@app.command()
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


@app.command()
def relay(verbose: Verbose = False) -> None:
    """Run the outbox relay alone: publishes events whose publish after commit failed."""
    from ridehail.processes.components import run_relay

    _run_component("relay", verbose, run_relay)


histories_app = typer.Typer(help="Recorded workflow histories.", no_args_is_help=True)
app.add_typer(histories_app, name="histories")


@histories_app.command("record")
def histories_record(
    out: Annotated[Path, typer.Option(help="where to write <scenario>.json")] = Path(
        "tests/histories"),
    only: Annotated[list[str] | None, typer.Option(help="record just these scenarios")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the files written, as JSON")] = False,
) -> None:
    """Play every saga scenario against the running stack (`ridehail dev`, with the same
    RIDEHAIL_* settings) and write each ride's workflow history for replay tests."""
    settings = with_secret(_settings())
    from ridehail.load.histories import record
    from ridehail.load.scenarios import SCENARIOS

    names = tuple(only or SCENARIOS)
    with console.status(f"playing {len(names)} scenarios against {settings.api_url} …"):
        try:
            files = asyncio.run(record(settings, out, names, lambda name, ride: console.print(
                f"recorded {name} (ride {ride})")))
        except (ValueError, RuntimeError) as e:
            console.print(f"[red]error:[/] {e}")
            raise typer.Exit(1) from None
    if as_json:
        print(json.dumps({"out": str(out.resolve()), "files": [str(f) for f in files]}))
    else:
        results.print(f"wrote {len(files)} histories to {out}")


db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
    as_json: Annotated[bool, typer.Option("--json", help="the revisions, as JSON")] = False,
) -> None:
    """Apply the schema migrations to RIDEHAIL_DATABASE_URL (PostgreSQL or SQLite)."""
    from store import migrate

    settings = _settings()
    before = migrate.current(settings.db_url)
    migrate.upgrade(settings.db_url, revision)
    after = migrate.current(settings.db_url)
    if as_json:
        print(json.dumps({"before": before, "after": after, "changed": before != after}))
        return
    results.print(f"database at revision {after}"
                  + (f" (was {before or 'empty'})" if before != after else " (up to date)"))


# Commands that live in their own modules.
register_bench(app)
register_simulate(app)
register_streams(app, _settings, console)
register_operations(app)
register_chaos(app)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # how ridehail dev starts its component processes
    app()
