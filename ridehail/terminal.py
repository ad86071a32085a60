"""What every ``ridehail`` command shares: the console it reports on (stderr) and the
settings it runs with, read once or explained before exiting."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ridehail.config import Settings

console = Console(stderr=True, highlight=False)


def settings_or_exit(data_dir: Path | None = None, **overrides: object) -> Settings:
    """The settings (environment, then ``overrides`` that are not None); an invalid value
    is reported and the command exits with status 2."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except Exception as e:  # noqa: BLE001 — pydantic explains what is wrong
        console.print(f"[red]invalid settings:[/] {e}")
        raise typer.Exit(2) from None
