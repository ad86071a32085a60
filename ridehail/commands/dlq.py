"""``ridehail dlq list|redrive|discard``: the dead-lettered events, listed, sent back to
their subject, or dropped once read."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated

import typer

from ridehail.commands.oneshot import run_once
from ridehail.commands.options import JsonLines
from ridehail.terminal import console, results

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from rich.table import Table

    from events.dlq import DeadLetter

app = typer.Typer(help="Dead-lettered events.", no_args_is_help=True)

LetterId = Annotated[int, typer.Argument(help="the id from `dlq list`")]


@app.command("list")
def list_letters(
    limit: Annotated[int, typer.Option(help="at most this many")] = 100,
    as_json: JsonLines = False,
) -> None:
    """List dead letters, oldest first (on stdout)."""
    from events.dlq import list_dead_letters

    letters = run_once("dlq", lambda rt: list_dead_letters(rt.js, limit))
    if as_json:
        for d in letters:
            print(json.dumps(_as_dict(d)))
        return
    if not letters:
        results.print("the DLQ is empty")
        return
    results.print(_table(letters))
    results.print(f"{len(letters)} dead letter{'s' if len(letters) != 1 else ''}")


def _as_dict(d: DeadLetter) -> dict[str, object]:
    return {
        "id": d.id, "consumer": d.consumer, "subject": d.original_subject,
        "stream": d.original_stream, "stream_seq": d.original_seq,
        "deliveries": d.deliveries, "error": d.error, "event_id": d.event_id,
        "event_type": d.event_type, "time": d.time.isoformat() if d.time else None,
    }


def _table(letters: list[DeadLetter]) -> Table:
    """The letters as a table; a cell is never cut or folded, so `| grep` finds a subject
    or an id whole."""
    from rich import box
    from rich.table import Table

    table = Table("id", "consumer", "subject", "event", "deliveries", "error",
                  box=box.HEAVY_HEAD if sys.stdout.isatty() else None)
    for column in table.columns:
        column.no_wrap = True
        column.overflow = "ignore"
    for d in letters:
        table.add_row(str(d.id), d.consumer, d.original_subject,
                      f"{d.event_type or '?'} {d.event_id or ''}", str(d.deliveries),
                      d.error[:120])
    return table


@app.command("redrive")
def redrive_letter(letter_id: LetterId) -> None:
    """Publish a dead letter to its original subject again and remove it from the DLQ."""
    from events.dlq import redrive

    letter = _on_letter(redrive, letter_id)
    results.print(f"redriven {letter.event_type or 'message'} {letter.event_id or ''} "
                  f"to {letter.original_subject}")


@app.command("discard")
def discard_letter(letter_id: LetterId) -> None:
    """Remove a dead letter you have read and decided needs nothing more."""
    from events.dlq import discard

    letter = _on_letter(discard, letter_id)
    results.print(f"discarded dead letter {letter.id}: {letter.event_type or 'message'} "
                  f"{letter.event_id or ''} from {letter.consumer}")


def _on_letter(action: Callable[[JetStreamContext, int], Awaitable[DeadLetter]],
               letter_id: int) -> DeadLetter:
    """``action`` on dead letter ``letter_id``; an unknown id ends the command."""
    from events.dlq import UnknownDeadLetter

    try:
        return run_once("dlq", lambda rt: action(rt.js, letter_id))
    except UnknownDeadLetter as e:
        console.print(f"[red]error:[/] {e}; see `ridehail dlq list`")
        raise typer.Exit(1) from None
