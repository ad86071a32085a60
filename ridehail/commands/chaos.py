"""``ridehail chaos``: run the chaos suite (``ridehail.load.chaos``) and print its
table."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ridehail.commands.options import JsonFile
from ridehail.terminal import console, results

if TYPE_CHECKING:
    from ridehail.load.chaos.suite import RoundResult


def chaos(
    quick: Annotated[bool, typer.Option(
        "--quick", help="each fault once, stalls of 10 s only (what CI runs)")] = False,
    rides: Annotated[int, typer.Option(min=1, help="rides per fault")] = 60,
    drivers: Annotated[int, typer.Option(min=1, help="drivers per fault")] = 20,
    concurrency: Annotated[int, typer.Option(min=1, help="rides at a time")] = 10,
    only: Annotated[list[str] | None, typer.Option(
        help="only the faults whose name contains this (repeatable)")] = None,
    json_path: JsonFile = None,
) -> None:
    """Run a mixed workload on the production shape (PostgreSQL of its own; separate
    api, worker, consumers and relay processes) and inject one fault at a time; after
    each, judge every ride and run the audit. Exit 1 on any violation."""
    from ridehail.load.chaos.shape import ShapeError
    from ridehail.load.chaos.suite import run_suite

    def say(line: str) -> None:
        console.print(line, soft_wrap=True, highlight=False, markup=False)

    try:
        rounds = asyncio.run(run_suite(quick=quick, rides=rides, drivers=drivers,
                                        concurrency=concurrency, only=only, say=say))
    except ShapeError as e:
        console.print(f"error: could not run the production shape: {e}", markup=False)
        raise typer.Exit(2) from None
    results.print(_table(rounds))
    if json_path is not None:
        json_path.write_text(json.dumps([asdict(r) for r in rounds], indent=2))
    bad = sum(len(r.violations) for r in rounds)
    console.print(f"{len(rounds)} faults, {bad} violations", highlight=False)
    raise typer.Exit(1 if bad or not rounds else 0)


def _table(rounds: list[RoundResult]) -> Table:
    """One row per fault: its rides, their outcomes, the recovery and the violations."""
    table = Table("fault", "rides", "outcomes", "recovered (s)", "refused", "violations")
    for r in rounds:
        table.add_row(r.fault, str(r.rides),
                      ", ".join(f"{k} {v}" for k, v in sorted(r.outcomes.items())),
                      "-" if r.recovered_s is None else f"{r.recovered_s:.1f}",
                      str(r.refused), str(len(r.violations)))
    return table
