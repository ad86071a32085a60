"""The operations commands: ``audit``, ``dlq list|redrive|discard``, ``projections
rebuild`` and ``replay`` — one-shot work against the running system's database, streams
and Temporal, none of which needs the JWT secret."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ridehail.terminal import console, results
from ridehail.terminal import settings_or_exit as _settings


@contextlib.contextmanager
def unfit_servers_exit() -> Iterator[None]:
    """A server that does not fit ridehail ends the command with its explanation."""
    from events.fitcheck import NatsUnfit
    from ridehail.processes.temporalcheck import TemporalUnfit

    try:
        yield
    except (NatsUnfit, TemporalUnfit) as e:
        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(2) from None



LetterId = Annotated[int, typer.Argument(help="the id from `dlq list`")]
AsJson = Annotated[bool, typer.Option("--json", help="print it as JSON")]


def register(app: typer.Typer) -> None:
    """Add the operations commands to the CLI."""

    def _once(name: str, body, *, temporal: bool = False):  # type: ignore[no-untyped-def]
        """Run a one-shot operation with a runtime (no stream or table creation)."""
        settings = _settings()
        from ridehail.processes.components import runtime

        async def main():  # type: ignore[no-untyped-def]
            async with runtime(settings, name, temporal=temporal, prepare=False) as rt:
                return await body(rt)

        with unfit_servers_exit():
            return asyncio.run(main())


    @app.command()
    def audit(
        as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    ) -> None:
        """Check the invariants of CONTRACT.md section 7; exit 0 when all hold, 1 otherwise.
        The report is printed on stdout."""
        from ridehail.ops.audit import run_audit

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


    def on_letter(action, letter_id: int):  # type: ignore[no-untyped-def]
        """``action`` on dead letter ``letter_id``; an unknown id ends the command."""
        from events.dlq import UnknownDeadLetter

        try:
            return _once("dlq", lambda rt: action(rt.js, letter_id))
        except UnknownDeadLetter as e:
            console.print(f"[red]error:[/] {e}; see `ridehail dlq list`")
            raise typer.Exit(1) from None

    @dlq_app.command("redrive")
    def dlq_redrive(letter_id: LetterId) -> None:
        """Publish a dead letter to its original subject again and remove it from the DLQ."""
        from events.dlq import redrive

        letter = on_letter(redrive, letter_id)
        results.print(f"redriven {letter.event_type or 'message'} {letter.event_id or ''} "
                      f"to {letter.original_subject}")

    @dlq_app.command("discard")
    def dlq_discard(letter_id: LetterId) -> None:
        """Remove a dead letter you have read and decided needs nothing more."""
        from events.dlq import discard

        letter = on_letter(discard, letter_id)
        results.print(f"discarded dead letter {letter.id}: {letter.event_type or 'message'} "
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

        from ridehail.ops.rebuild import rebuild_projections, running_projectors

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
        limit: Annotated[int | None, typer.Option(
            help="at most this many (with --query)")] = None,
        as_json: Annotated[bool, typer.Option(
            "--json", help="one JSON object per history")] = False,
    ) -> None:
        """Replay workflow histories against the current workflow code; exit 1 on any
        non-determinism. One line per history on stdout."""
        if (directory is None) == (query is None):
            console.print("[red]error:[/] give exactly one of --dir or --query")
            raise typer.Exit(2)
        settings = _settings()
        from ridehail.ops import replay as r

        async def run() -> list[r.ReplayOutcome]:
            if directory is not None:
                return await r.replay_files(r.history_files(directory))
            from infra.connections import connect_temporal

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
