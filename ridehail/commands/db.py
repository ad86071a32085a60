"""``ridehail db upgrade``: the schema migrations applied to the configured database."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ridehail.commands.options import AsJson
from ridehail.terminal import results, settings_or_exit

app = typer.Typer(help="The database schema.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
    as_json: AsJson = False,
) -> None:
    """Apply the schema migrations to RIDEHAIL_DATABASE_URL (PostgreSQL or SQLite)."""
    from store import migrate

    settings = settings_or_exit()
    before = migrate.current(settings.db_url)
    migrate.upgrade(settings.db_url, revision)
    after = migrate.current(settings.db_url)
    if as_json:
        print(json.dumps({"before": before, "after": after, "changed": before != after}))
        return
    results.print(f"database at revision {after}"
                  + (f" (was {before or 'empty'})" if before != after else " (up to date)"))
