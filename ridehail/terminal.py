"""What every ``ridehail`` command shares: the console it reports on (stderr) and the
settings it runs with, read once or explained before exiting."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from infra.config import Settings, SettingsError

# Diagnostics (progress, errors, what a command is doing) on stderr; results on stdout.
# Neither wraps nor cuts lines when it is not a terminal: a pipe gets whole lines.
console = Console(stderr=True, highlight=False, soft_wrap=True,
                  width=None if sys.stderr.isatty() else 10_000)
results = Console(highlight=False, soft_wrap=True,
                  width=None if sys.stdout.isatty() else 10_000)


def settings_or_exit(data_dir: Path | None = None, *, find_dev: bool = True,
                     **overrides: object) -> Settings:
    """The settings (environment, then ``overrides`` that are not None, then, with
    ``find_dev``, the addresses of a ``ridehail dev`` running on the data dir for those not
    set); an invalid value is reported and the command exits with status 2."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    try:
        settings = Settings(**values)  # type: ignore[arg-type]  # pydantic checks each value
    except Exception as e:  # noqa: BLE001 — pydantic explains what is wrong
        console.print(f"[red]invalid settings:[/] {e}")
        raise typer.Exit(2) from None
    if not find_dev:
        return settings
    settings, found = settings.running_dev()
    if found is not None:
        console.print(f"using the servers of the ridehail dev running on {found.parent} "
                      f"(NATS {settings.nats_url}, Temporal {settings.temporal_address})",
                      markup=False)
    return settings


def with_secret(settings: Settings) -> Settings:
    """The settings with the JWT secret, for the commands that sign or check tokens:
    RIDEHAIL_JWT_SECRET, or else the data dir's file (said on stderr); exit 2 without."""
    try:
        secret, found_in = settings.find_jwt_secret()
    except SettingsError as e:
        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(2) from None
    if settings.jwt_secret:
        return settings
    console.print(f"using the JWT secret in {escape(found_in)}", soft_wrap=True)
    return settings.model_copy(update={"jwt_secret": secret})
