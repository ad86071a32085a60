"""``ridehail token``: a signed bearer token for a rider, a driver or an admin."""

from __future__ import annotations

from typing import Annotated

import typer

from ridehail.terminal import console, settings_or_exit, with_secret


def token(
    role: Annotated[str, typer.Option(help="rider, driver or admin")],
    sub: Annotated[str, typer.Option(help="the rider's or driver's id")],
    ttl: Annotated[int, typer.Option(
        help="seconds until it expires; at most RIDEHAIL_JWT_MAX_TTL_S (86400)")] = 3600,
) -> None:
    """Print a signed bearer token (HS256 with RIDEHAIL_JWT_SECRET, with `iat` now and
    `exp` `--ttl` seconds later); a lifetime the API would refuse is refused here."""
    from infra.tokens import ROLES, issue_token

    if role not in ROLES:
        console.print(f"[red]error:[/] --role must be one of {', '.join(ROLES)}")
        raise typer.Exit(2)
    if not sub.strip():
        console.print("[red]error:[/] --sub must not be empty")
        raise typer.Exit(2)
    settings = settings_or_exit(find_dev=False)  # signs alone: uses no server
    if not 0 < ttl <= settings.jwt_max_ttl_s:
        console.print(f"[red]error:[/] --ttl must be between 1 and {settings.jwt_max_ttl_s} "
                      "seconds (RIDEHAIL_JWT_MAX_TTL_S): the API refuses a token that "
                      "lives longer")
        raise typer.Exit(2)
    settings = with_secret(settings)
    print(issue_token(settings.require_jwt_secret(), role, sub, ttl))
