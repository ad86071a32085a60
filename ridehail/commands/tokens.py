"""``ridehail token``: a signed bearer token for a rider, a driver or an admin."""

from __future__ import annotations

from typing import Annotated

import typer

from ridehail.terminal import console, settings_or_exit, with_secret


def token(
    role: Annotated[str, typer.Option(help="rider, driver or admin")],
    sub: Annotated[str, typer.Option(help="the rider's or driver's id")],
    ttl: Annotated[int, typer.Option(help="seconds until it expires")] = 3600,
) -> None:
    """Print a signed bearer token (HS256 with RIDEHAIL_JWT_SECRET)."""
    from infra.tokens import ROLES, issue_token

    if role not in ROLES:
        console.print(f"[red]error:[/] --role must be one of {', '.join(ROLES)}")
        raise typer.Exit(2)
    if not sub.strip():
        console.print("[red]error:[/] --sub must not be empty")
        raise typer.Exit(2)
    settings = with_secret(settings_or_exit())
    print(issue_token(settings.require_jwt_secret(), role, sub, ttl))
