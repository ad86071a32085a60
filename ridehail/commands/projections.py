"""``ridehail projections rebuild``: drop the read models and rebuild them from the event
log in the database, refusing while projectors are applying events into them."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from ridehail.commands.oneshot import run_once
from ridehail.commands.options import AsJson
from ridehail.terminal import console, results

if TYPE_CHECKING:
    from ridehail.ops.rebuild import RebuildResult
    from ridehail.processes.components import Runtime

app = typer.Typer(help="The read models.", no_args_is_help=True)


@app.command("rebuild")
def rebuild_read_models(
    force: Annotated[bool, typer.Option(
        "--force", help="rebuild even while projectors are pulling")] = False,
    as_json: AsJson = False,
) -> None:
    """Drop the read models and rebuild them by replaying every ride and driver event of
    the event log (the database's outbox) in the order written. Refuses while projectors
    run (stop `ridehail consumers` or `ridehail dev` first), unless --force."""
    from rich.progress import Progress

    from ridehail.ops.rebuild import rebuild_projections, running_projectors

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("replaying events", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        async def rebuild(rt: Runtime) -> RebuildResult | list[str]:
            if not force and (running := await running_projectors(rt.js)):
                return running
            return await rebuild_projections(rt.db, rt.js, progress)

        result = run_once("rebuild", rebuild)
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

