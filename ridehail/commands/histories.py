"""``ridehail histories record``: the saga's scenarios played against the running stack,
each ride's workflow history written for the replay tests."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from ridehail.commands.options import AsJson
from ridehail.terminal import console, results, settings_or_exit, with_secret

app = typer.Typer(help="Recorded workflow histories.", no_args_is_help=True)


@app.command("record")
def record_histories(
    out: Annotated[Path, typer.Option(help="where to write <scenario>.json")] = Path(
        "tests/histories"),
    only: Annotated[list[str] | None, typer.Option(help="record just these scenarios")] = None,
    as_json: AsJson = False,
) -> None:
    """Play every saga scenario against the running stack (`ridehail dev`, with the same
    RIDEHAIL_* settings) and write each ride's workflow history for replay tests."""
    settings = with_secret(settings_or_exit())
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
