"""``ridehail replay``: replay workflow histories, from files or found on the Temporal
server, against the current workflow code, and say which are not deterministic."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from ridehail.commands.options import JsonLines
from ridehail.terminal import console, results, settings_or_exit

if TYPE_CHECKING:
    from infra.config import Settings
    from ridehail.ops.replay import ReplayOutcome


def replay(
    directory: Annotated[Path | None, typer.Option(
        "--dir", help="replay the *.json histories in this folder")] = None,
    query: Annotated[str | None, typer.Option(
        "--query", help="replay the workflows this visibility query finds on the server")
    ] = None,
    limit: Annotated[int | None, typer.Option(
        help="at most this many (with --query)")] = None,
    as_json: JsonLines = False,
) -> None:
    """Replay workflow histories against the current workflow code; exit 1 on any
    non-determinism. One line per history on stdout."""
    if (directory is None) == (query is None):
        console.print("[red]error:[/] give exactly one of --dir or --query")
        raise typer.Exit(2)
    # histories from files need no Temporal server; --query asks the running one
    settings = settings_or_exit(find_dev=directory is None)
    try:
        outcomes = asyncio.run(_replayed(settings, directory, query or "", limit))
    except (FileNotFoundError, RuntimeError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    if as_json:
        for o in outcomes:
            print(json.dumps({"name": o.name, "events": o.events, "ok": o.ok,
                              "error": None if o.ok else str(o.error)}))
    else:
        _print(outcomes)
    raise typer.Exit(1 if any(not o.ok for o in outcomes) else 0)


async def _replayed(settings: Settings, directory: Path | None, query: str,
                    limit: int | None) -> list[ReplayOutcome]:
    """The histories in ``directory`` replayed, or else those ``query`` finds."""
    from ridehail.ops import replay as r

    if directory is not None:
        return await r.replay_files(r.history_files(directory))
    from infra.connections import connect_temporal

    client = await connect_temporal(settings)
    return await r.replay_live(client, query, limit)


def _print(outcomes: list[ReplayOutcome]) -> None:
    """One line per history, then how many replayed cleanly."""
    failed = [o for o in outcomes if not o.ok]
    for o in outcomes:
        if o.ok:
            results.print(f"[green]ok  [/] {escape(o.name)} ({o.events} events)")
        else:
            results.print(f"[red]FAIL[/] {escape(o.name)} ({o.events} events): "
                          f"{escape(str(o.error))}")
    results.print(f"{len(outcomes) - len(failed)} of {len(outcomes)} histories replayed "
                  + ("cleanly" if not failed else f"cleanly; {len(failed)} FAILED"))
