"""The ``ridehail`` command (CONTRACT.md section 1)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ridehail.config import Settings, SettingsError

app = typer.Typer(help="ridehail: event-driven ride booking on Temporal and NATS JetStream.",
                  no_args_is_help=True, add_completion=False)
# Diagnostics (progress, errors, what a command is doing) on stderr; results on stdout.
# Neither wraps nor cuts lines when it is not a terminal: a pipe gets whole lines.
console = Console(stderr=True, highlight=False, soft_wrap=True,
                  width=None if sys.stderr.isatty() else 10_000)
results = Console(highlight=False, soft_wrap=True,
                  width=None if sys.stdout.isatty() else 10_000)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="RIDEHAIL_DATA_DIR")]


def _settings(data_dir: Path | None = None, **overrides: object) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except Exception as e:  # noqa: BLE001 — pydantic explains what is wrong
        console.print(f"[red]invalid settings:[/] {e}")
        raise typer.Exit(2) from None


def run_service(main: Coroutine[Any, Any, None]) -> None:
    """Run a long-running process's main coroutine on uvloop, the faster event loop the
    API, the worker and the consumers all spend much of their time in."""
    import uvloop

    with _unfit_servers_exit():
        uvloop.run(main)


@contextlib.contextmanager
def _unfit_servers_exit() -> Iterator[None]:
    """A server that does not fit ridehail ends the command with its explanation."""
    from events.fitcheck import NatsUnfit
    from ridehail.temporalcheck import TemporalUnfit

    try:
        yield
    except (NatsUnfit, TemporalUnfit) as e:
        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(2) from None


def _logging(verbose: bool) -> None:
    from ridehail.logs import configure_logging

    configure_logging(verbose, _settings().log_format)


def with_secret(settings: Settings) -> Settings:
    """The settings with the JWT secret, for the commands that sign or check tokens:
    RIDEHAIL_JWT_SECRET, or else the data dir's file (said on stderr); exit 2 without."""
    try:
        secret, found_in = settings.find_jwt_secret()
    except SettingsError as e:
        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(2) from None
    if settings.jwt_secret:
        return settings
    console.print(f"using the JWT secret in {escape(found_in)}", soft_wrap=True)
    return settings.model_copy(update={"jwt_secret": secret})


@app.command()
def dev(
    data_dir: DataDir = None,
    api_port: Annotated[int | None, typer.Option(help="RIDEHAIL_API_PORT")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the whole stack on this machine: Temporal dev server, nats-server, the worker,
    the consumers, the outbox relay and the API."""
    from ridehail.devstack import DevStackError, run_dev

    _logging(verbose)
    settings = with_secret(_settings(data_dir, api_port=api_port).with_dev_secret())

    def say(line: str) -> None:
        console.print(f"[bold cyan]ridehail[/] {escape(line)}", soft_wrap=True)

    try:
        run_service(run_dev(settings, say, verbose))
    except DevStackError as e:
        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(1) from None


@app.command()
def token(
    role: Annotated[str, typer.Option(help="rider, driver or admin")],
    sub: Annotated[str, typer.Option(help="the rider's or driver's id")],
    ttl: Annotated[int, typer.Option(help="seconds until it expires")] = 3600,
) -> None:
    """Print a signed bearer token (HS256 with RIDEHAIL_JWT_SECRET)."""
    from ridehail.tokens import ROLES, issue_token

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
    from ridehail.components import run_logged, runtime
    from ridehail.devstack import install_stop_handlers

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        async with runtime(settings, name, temporal=name != "relay") as rt:
            console.print(f"[bold cyan]ridehail[/] {name} {RUNNING} — Ctrl-C to stop")
            await run_logged(name, lambda: body(rt, stop), stop)

    run_service(main())


Verbose = Annotated[bool, typer.Option("--verbose", "-v")]


@app.command()
def api(verbose: Verbose = False) -> None:
    """Run the HTTP API alone."""
    settings = with_secret(_settings())  # before the heavy imports: fail fast
    from ridehail.components import run_api

    _run_component("api", verbose, run_api, settings)


@app.command()
def worker(verbose: Verbose = False) -> None:
    """Run the Temporal worker alone (task queue `rides`)."""
    from ridehail.components import run_temporal_worker

    _run_component("worker", verbose, run_temporal_worker)


@app.command()
def consumers(
    names: Annotated[list[str] | None, typer.Argument(help="a subset; all by default")] = None,
    verbose: Verbose = False,
) -> None:
    """Run the event consumers (workflow-trigger, ride-projector, driver-projector,
    notifier), all or the ones named."""
    from ridehail.components import CONSUMERS, run_consumers

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
    from ridehail.components import run_relay

    _run_component("relay", verbose, run_relay)


def _once(name: str, body, *, temporal: bool = False):  # type: ignore[no-untyped-def]
    """Run a one-shot operation with a runtime (no stream or table creation)."""
    settings = _settings()
    from ridehail.components import runtime

    async def main():  # type: ignore[no-untyped-def]
        async with runtime(settings, name, temporal=temporal, prepare=False) as rt:
            return await body(rt)

    with _unfit_servers_exit():
        return asyncio.run(main())


@app.command()
def audit(
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Check the invariants of CONTRACT.md section 7; exit 0 when all hold, 1 otherwise.
    The report is printed on stdout."""
    from ridehail.audit import run_audit

    report = _once("audit", lambda rt: run_audit(rt.db, rt.js, rt.temporal, rt.settings),
                   temporal=True)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for check in report.checks:
            mark = "[green]ok  [/]" if check.ok else "[red]FAIL[/]"
            results.print(f"{mark} {check.number}. {escape(check.name)} "
                          f"({check.checked} checked)")
            for v in check.violations:
                results.print(f"       - {escape(str(v))}")
            if check.count > len(check.violations):
                results.print(f"       … and {check.count - len(check.violations)} more")
        results.print("all invariants hold" if report.ok else "[red]invariants violated[/]")
    raise typer.Exit(0 if report.ok else 1)


dlq_app = typer.Typer(help="Dead-lettered events.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(help="at most this many")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """List dead letters, oldest first (on stdout)."""
    from rich import box
    from rich.table import Table

    from events.dlq import list_dead_letters

    letters = _once("dlq", lambda rt: list_dead_letters(rt.js, limit))
    if as_json:
        for d in letters:
            print(json.dumps({
                "id": d.id, "consumer": d.consumer, "subject": d.original_subject,
                "stream": d.original_stream, "stream_seq": d.original_seq,
                "deliveries": d.deliveries, "error": d.error, "event_id": d.event_id,
                "event_type": d.event_type, "time": d.time.isoformat() if d.time else None,
            }))
        return
    if not letters:
        results.print("the DLQ is empty")
        return
    # no_wrap: a cell is never cut or folded, so `| grep` finds a subject or an id whole
    table = Table("id", "consumer", "subject", "event", "deliveries", "error",
                  box=box.HEAVY_HEAD if sys.stdout.isatty() else None)
    for column in table.columns:
        column.no_wrap = True
        column.overflow = "ignore"
    for d in letters:
        table.add_row(str(d.id), d.consumer, d.original_subject,
                      f"{d.event_type or '?'} {d.event_id or ''}", str(d.deliveries),
                      d.error[:120])
    results.print(table)
    results.print(f"{len(letters)} dead letter{'s' if len(letters) != 1 else ''}")


@dlq_app.command("redrive")
def dlq_redrive(letter_id: Annotated[int, typer.Argument(help="the id from `dlq list`")]) -> None:
    """Publish a dead letter to its original subject again and remove it from the DLQ."""
    from events.dlq import UnknownDeadLetter, redrive

    try:
        letter = _once("dlq", lambda rt: redrive(rt.js, letter_id))
    except UnknownDeadLetter as e:
        console.print(f"[red]error:[/] {e}; see `ridehail dlq list`")
        raise typer.Exit(1) from None
    results.print(f"redriven {letter.event_type or 'message'} {letter.event_id or ''} "
                  f"to {letter.original_subject}")


@dlq_app.command("discard")
def dlq_discard(letter_id: Annotated[int, typer.Argument(help="the id from `dlq list`")]) -> None:
    """Remove a dead letter you have read and decided needs nothing more."""
    from events.dlq import UnknownDeadLetter, discard

    try:
        letter = _once("dlq", lambda rt: discard(rt.js, letter_id))
    except UnknownDeadLetter as e:
        console.print(f"[red]error:[/] {e}; see `ridehail dlq list`")
        raise typer.Exit(1) from None
    console.print(f"discarded dead letter {letter.id}: {letter.event_type or 'message'} "
                  f"{letter.event_id or ''} from {letter.consumer}")


projections_app = typer.Typer(help="The read models.", no_args_is_help=True)
app.add_typer(projections_app, name="projections")


@projections_app.command("rebuild")
def projections_rebuild(
    force: Annotated[bool, typer.Option(
        "--force", help="rebuild even while projectors are pulling")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the result as JSON")] = False,
) -> None:
    """Drop the read models and rebuild them by replaying RIDES and DRIVERS from the
    start. Refuses while projectors run (stop `ridehail consumers` or `ridehail dev`
    first), unless --force."""
    from rich.progress import Progress

    from events.rebuild import rebuild_projections, running_projectors

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("replaying events", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        async def rebuild(rt):  # type: ignore[no-untyped-def]
            if not force and (running := await running_projectors(rt.js)):
                return running
            return await rebuild_projections(rt.db, rt.js, progress)

        result = _once("rebuild", rebuild)
    if isinstance(result, list):
        console.print(
            "[red]error:[/] projectors are applying events now, into the read models a "
            f"rebuild would drop: {', '.join(result)}. Stop the processes running them "
            "(`ridehail consumers`, or `ridehail dev`: Ctrl-C), or run only the other "
            "consumers (`ridehail consumers workflow-trigger notifier`), then rebuild; "
            "--force rebuilds anyway")
        raise typer.Exit(1)
    if as_json:
        print(json.dumps({"rides": result.rides, "ride_events": result.rides_events,
                          "driver_events": result.driver_events,
                          "skipped_invalid": result.skipped_invalid}))
        return
    results.print(f"rebuilt {result.rides} rides from {result.rides_events} ride events and "
                  f"{result.driver_events} driver events"
                  + (f" ({result.skipped_invalid} invalid skipped)" if result.skipped_invalid
                     else ""))


@app.command()
def replay(
    directory: Annotated[Path | None, typer.Option(
        "--dir", help="replay the *.json histories in this folder")] = None,
    query: Annotated[str | None, typer.Option(
        "--query", help="replay the workflows this visibility query finds on the server")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many (with --query)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per history")] = False,
) -> None:
    """Replay workflow histories against the current workflow code; exit 1 on any
    non-determinism. One line per history on stdout."""
    if (directory is None) == (query is None):
        console.print("[red]error:[/] give exactly one of --dir or --query")
        raise typer.Exit(2)
    settings = _settings()
    from ridehail import replay as r

    async def run() -> list[r.ReplayOutcome]:
        if directory is not None:
            return await r.replay_files(r.history_files(directory))
        from ridehail.connections import connect_temporal

        client = await connect_temporal(settings)
        return await r.replay_live(client, query or "", limit)

    try:
        outcomes = asyncio.run(run())
    except (FileNotFoundError, RuntimeError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    failed = [o for o in outcomes if not o.ok]
    if as_json:
        for o in outcomes:
            print(json.dumps({"name": o.name, "events": o.events, "ok": o.ok,
                              "error": None if o.ok else str(o.error)}))
        raise typer.Exit(1 if failed else 0)
    for o in outcomes:
        if o.ok:
            results.print(f"[green]ok  [/] {escape(o.name)} ({o.events} events)")
        else:
            results.print(f"[red]FAIL[/] {escape(o.name)} ({o.events} events): "
                          f"{escape(str(o.error))}")
    results.print(f"{len(outcomes) - len(failed)} of {len(outcomes)} histories replayed "
                  + ("cleanly" if not failed else f"cleanly; {len(failed)} FAILED"))
    raise typer.Exit(1 if failed else 0)


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
    from ridehail.histories import record
    from ridehail.scenarios import SCENARIOS

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
    from ridehail import migrate

    settings = _settings()
    before = migrate.current(settings.db_url)
    migrate.upgrade(settings.db_url, revision)
    after = migrate.current(settings.db_url)
    if as_json:
        print(json.dumps({"before": before, "after": after, "changed": before != after}))
        return
    results.print(f"database at revision {after}"
                  + (f" (was {before or 'empty'})" if before != after else " (up to date)"))


def main() -> None:  # pragma: no cover
    app()


# Commands that live in their own modules.
from ridehail.bench import register as _register_bench  # noqa: E402
from ridehail.simulate import register as _register_simulate  # noqa: E402
from ridehail.streamscli import register as _register_streams  # noqa: E402

_register_bench(app)
_register_simulate(app)
_register_streams(app, _settings, console)

if __name__ == "__main__":  # how ridehail dev starts its worker process
    app()
