"""``ridehail prune [--dry-run] [--json]``: one run of housekeeping, now, by hand. The
worker's schedule ``ridehail-housekeeping`` runs the same every
``RIDEHAIL_PRUNE_EVERY_S``; this is for an operator who wants it done (or counted) at
once, or a deployment without the schedule. It needs the database alone."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from ridehail.commands.oneshot import run_on_database
from ridehail.commands.options import AsJson
from ridehail.terminal import console, results

if TYPE_CHECKING:
    from rich.table import Table

    from infra.config import Settings
    from store.db import Database
    from workflows.housekeeping import PruneReport

DryRun = Annotated[bool, typer.Option("--dry-run", help="count what would go; delete nothing")]


class MissingTables(RuntimeError):
    """The database lacks tables housekeeping prunes: not a ridehail database yet."""


def prune(dry_run: DryRun = False, as_json: AsJson = False) -> None:
    """Delete the rows past their lifetime from the tables that grow with traffic, and
    say how many went, per store (on stdout); with --dry-run, how many would go."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        report = run_on_database(lambda db, settings: _prune(db, settings, dry_run))
    except MissingTables as e:
        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(1) from None
    except SQLAlchemyError as e:
        console.print(f"[red]error:[/] the database did not answer: {escape(str(e))}",
                      soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps({"dry_run": report.dry_run, "removed": report.removed,
                          "total": report.total, "keep_s": report.keep_s,
                          "seconds": report.seconds,
                          "partitions_made": report.partitions_made}))
        return
    results.print(_table(report))
    verb = "would remove" if report.dry_run else "removed"
    results.print(f"{verb} {report.total} row{'s' if report.total != 1 else ''} past their "
                  f"lifetime in {report.seconds:.2f} s")
    if report.partitions_made:
        results.print(f"made the event log's partitions {', '.join(report.partitions_made)}")


async def _prune(db: Database, settings: Settings, dry_run: bool) -> PruneReport:
    from sqlalchemy import inspect

    from activities.housekeeping import prune_once
    from store.prune import stores_on

    here = stores_on(db.engine.dialect.name)
    missing = sorted(set(here) - set(inspect(db.engine).get_table_names()))
    if missing:
        raise MissingTables(f"the database has no table {', '.join(missing)}: run "
                            "`ridehail db upgrade` (or start ridehail) first")
    return await prune_once(db, settings, dry_run=dry_run)


def span(seconds: float) -> str:
    """A lifetime the way a person says it: 7d, 2d, 1h, 90s."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _table(report: PruneReport) -> Table:
    """Each store, its lifetime and what went; cells never cut or folded."""
    from rich import box
    from rich.table import Table

    table = Table("store", "kept for", "would remove" if report.dry_run else "removed",
                  box=box.HEAVY_HEAD if sys.stdout.isatty() else None)
    for column in table.columns:
        column.no_wrap = True
        column.overflow = "ignore"
    table.columns[2].justify = "right"
    for store, n in report.removed.items():
        table.add_row(store, span(report.keep_s.get(store, 0)), str(n))
    return table
