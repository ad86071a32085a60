"""``ridehail streams check`` and ``ridehail streams migrate`` (CONTRACT.md section 3):
the JetStream streams and durable consumers against the configuration ridehail
declares, compared, or brought to it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from infra.config import Settings
from ridehail.commands.options import AsJson
from ridehail.terminal import console, settings_or_exit

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from events.fitcheck import FitReport
    from events.migrate_streams import MigrationResult

T = TypeVar("T")

app = typer.Typer(help="The JetStream streams and consumers ridehail declares.",
                  no_args_is_help=True)

BACKUPS = "stream-backups"
CONNECT_TIMEOUT_S = 10.0
DEFAULT_WAIT_S = 60.0
MAX_WAIT_S = 540.0  # the whole command is given 600 s
out = Console(highlight=False, soft_wrap=True)  # the reports, on stdout


@app.command("check")
def check(as_json: AsJson = False) -> None:
    """Fit-check the NATS server: JetStream, its version, and each stream and durable
    consumer against the declared configuration. Changes nothing; exit 1 when
    anything differs."""
    from events.fitcheck import fit_check

    s = settings_or_exit()

    async def run(nc: NATS) -> FitReport:
        return await fit_check(nc, nc.jetstream(), replicas=s.stream_replicas,
                               keep_s=s.stream_keep_s,
                               notification_keep_s=s.notification_keep_s, repair=False)

    report = _connected(s, "streams-check", run)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        _print_report(report)
    raise typer.Exit(0 if report.ok else 1)


@app.command("migrate")
def migrate(
    force: Annotated[bool, typer.Option(
        "--force", help="even while consumers are pulling (they may see events twice)")
    ] = False,
    wait: Annotated[float, typer.Option(
        "--wait", min=0, max=MAX_WAIT_S,
        help="seconds to wait for durables to acknowledge what a shorter "
             "RIDEHAIL_STREAM_KEEP_S or RIDEHAIL_NOTIFICATION_KEEP_S deletes")
    ] = DEFAULT_WAIT_S,
    as_json: AsJson = False,
) -> None:
    """Bring the streams and durable consumers to the declared configuration: in place
    where NATS allows, otherwise by rewriting the stream in order (a backup of every
    message is written to <data dir>/stream-backups first). Stop the ridehail
    components first, but to shorten how long RIDES and DRIVERS keep an event
    (RIDEHAIL_STREAM_KEEP_S) or NOTIFICATIONS a notification
    (RIDEHAIL_NOTIFICATION_KEEP_S): that waits for every durable to acknowledge what it
    deletes, and the consumers may run meanwhile."""
    from events.migrate_streams import ComponentsRunning, migrate

    s = settings_or_exit()

    async def run(nc: NATS) -> MigrationResult:
        return await migrate(nc, nc.jetstream(), replicas=s.stream_replicas,
                             keep_s=s.stream_keep_s,
                             notification_keep_s=s.notification_keep_s,
                             backup_dir=s.data_dir / BACKUPS,
                             force=force, wait_s=wait,
                             say=lambda line: console.print(line, soft_wrap=True))

    try:
        result = _connected(s, "streams-migrate", run)
    except ComponentsRunning as e:
        console.print(f"[red]error:[/] {e}", soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        _print_migration(result)
    raise typer.Exit(0 if result.ok else 1)


def _print_report(report: FitReport) -> None:
    jetstream = "JetStream on" if report.jetstream else "no JetStream"
    out.print(f"NATS {report.servers}: nats-server {report.version or '?'}, {jetstream}")
    for line in report.done:
        out.print(f"  done: {line}")
    for f in report.findings:
        out.print(f"  [red]unfit[/] {escape(str(f))}", soft_wrap=True)
    out.print("fits ridehail" if report.ok else "[red]does not fit ridehail[/]")


def _print_migration(result: MigrationResult) -> None:
    """What the migration changed, the backups it wrote and the fit-check after it."""
    for name, kept in result.rewritten.items():
        out.print(f"rewrote {name}: {kept} messages kept, in order")
    for line in result.recreated:
        out.print(f"recreated {line}")
    for line in result.dropped:
        out.print(f"removed with its stream (not declared by ridehail): {line}")
    for path in result.backups:
        out.print(f"backup: {Path(path).resolve()}")
    for name, what in result.shortened.items():
        out.print(f"age limit of {name}: {what}")
    for behind in result.behind:
        out.print(f"  [red]behind[/] {escape(str(behind))}", soft_wrap=True)
    if result.behind:
        from events.stream_age import said_settings

        out.print("  let the consumers catch up, then migrate again (or give it longer: "
                  "--wait). Consumers that cannot start on these streams start with "
                  f"{said_settings(result.behind)}, which keeps every event "
                  "they need: migrate to it, run them until they catch up, then migrate to "
                  "the window you want", soft_wrap=True)
    _print_report(result.after)
    if not result.ok:
        out.print("[red]could not migrate:[/] " + (
            "the durables above are behind" if result.behind
            else "the findings above need a hand (or a newer nats-server)"))


def _connected(s: Settings, name: str, run: Callable[[NATS], Awaitable[T]]) -> T:
    """``run`` with a connection to NATS, closed after; a clear error if NATS does not
    answer or cannot hold the streams."""
    from events.fitcheck import NatsUnfit

    async def connected() -> T:
        nc = await _connect(s, name)
        try:
            return await run(nc)
        finally:
            await nc.close()

    try:
        return asyncio.run(asyncio.wait_for(connected(), 600))
    except NatsUnfit as e:
        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except (OSError, TimeoutError) as e:
        console.print(f"[red]error:[/] cannot reach NATS at {s.nats_url}: {e}")
        raise typer.Exit(2) from None


async def _connect(s: Settings, name: str) -> NATS:
    from infra.connections import connect_nats

    try:
        return await asyncio.wait_for(connect_nats(s, name), CONNECT_TIMEOUT_S)
    except TimeoutError:
        raise OSError(f"no answer in {CONNECT_TIMEOUT_S:.0f}s") from None
