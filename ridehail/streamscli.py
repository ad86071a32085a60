"""``ridehail streams check`` and ``ridehail streams migrate`` (CONTRACT.md section 3)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from infra.config import Settings

BACKUPS = "stream-backups"


def _print_report(report, out: Console) -> None:  # type: ignore[no-untyped-def]
    jetstream = "JetStream on" if report.jetstream else "no JetStream"
    out.print(f"NATS {report.servers}: nats-server {report.version or '?'}, {jetstream}")
    for line in report.done:
        out.print(f"  done: {line}")
    for f in report.findings:
        out.print(f"  [red]unfit[/] {escape(str(f))}", soft_wrap=True)
    out.print("fits ridehail" if report.ok else "[red]does not fit ridehail[/]")


def register(app: typer.Typer, settings: Callable[[], Settings], console: Console) -> None:
    """Add the ``streams`` commands to the CLI (``settings`` reads them, exiting on
    invalid ones; ``console`` is where diagnostics go)."""
    streams_app = typer.Typer(help="The JetStream streams and consumers ridehail declares.",
                              no_args_is_help=True)
    app.add_typer(streams_app, name="streams")
    out = Console(highlight=False, soft_wrap=True)

    @streams_app.command("check")
    def check(
        as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    ) -> None:
        """Fit-check the NATS server: JetStream, its version, and each stream and durable
        consumer against the declared configuration. Changes nothing; exit 1 when
        anything differs."""
        from events.fitcheck import fit_check

        s = settings()

        async def run():  # type: ignore[no-untyped-def]
            nc = await _connect(s, "streams-check")
            try:
                return await fit_check(nc, nc.jetstream(), replicas=s.stream_replicas,
                                       repair=False)
            finally:
                await nc.close()

        report = _connected(run, s, console)
        if as_json:
            print(json.dumps(report.as_dict(), indent=2))
        else:
            _print_report(report, out)
        raise typer.Exit(0 if report.ok else 1)

    @streams_app.command("migrate")
    def migrate(
        force: Annotated[bool, typer.Option(
            "--force", help="even while consumers are pulling (they may see events twice)")
        ] = False,
    ) -> None:
        """Bring the streams and durable consumers to the declared configuration: in place
        where NATS allows, otherwise by rewriting the stream in order (a backup of every
        message is written to <data dir>/stream-backups first). Stop the ridehail
        components first."""
        from events.migrate_streams import ComponentsRunning, migrate

        s = settings()
        backups = s.data_dir / BACKUPS

        async def run():  # type: ignore[no-untyped-def]
            nc = await _connect(s, "streams-migrate")
            try:
                return await migrate(nc, nc.jetstream(), replicas=s.stream_replicas,
                                     backup_dir=backups, force=force,
                                     say=lambda line: console.print(line, soft_wrap=True))
            finally:
                await nc.close()

        try:
            result = _connected(run, s, console)
        except ComponentsRunning as e:
            console.print(f"[red]error:[/] {e}", soft_wrap=True)
            raise typer.Exit(2) from None
        for name, kept in result.rewritten.items():
            out.print(f"rewrote {name}: {kept} messages kept, in order")
        for line in result.recreated:
            out.print(f"recreated {line}")
        for line in result.dropped:
            out.print(f"removed with its stream (not declared by ridehail): {line}")
        for path in result.backups:
            out.print(f"backup: {Path(path).resolve()}")
        _print_report(result.after, out)
        if not result.ok:
            out.print("[red]could not migrate:[/] the findings above need a hand "
                      "(or a newer nats-server)")
        raise typer.Exit(0 if result.ok else 1)


CONNECT_TIMEOUT_S = 10.0


async def _connect(s: Settings, name: str):  # type: ignore[no-untyped-def]
    from infra.connections import connect_nats

    try:
        return await asyncio.wait_for(connect_nats(s, name), CONNECT_TIMEOUT_S)
    except TimeoutError:
        raise OSError(f"no answer in {CONNECT_TIMEOUT_S:.0f}s") from None


def _connected(run, s: Settings, console: Console):  # type: ignore[no-untyped-def]
    """Run ``run`` with a clear error if NATS does not answer or cannot hold the streams."""
    from events.fitcheck import NatsUnfit

    try:
        return asyncio.run(asyncio.wait_for(run(), 600))
    except NatsUnfit as e:
        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except (OSError, TimeoutError) as e:
        console.print(f"[red]error:[/] cannot reach NATS at {s.nats_url}: {e}")
        raise typer.Exit(2) from None
