"""What the one-shot operations share (``audit``, ``dlq``, ``projections rebuild``,
``prune``): a runtime for a single piece of work against the running system, which
creates no stream or table, or the database alone for work that needs nothing else; and
the explanation when a server does not fit ridehail."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.markup import escape

from ridehail.terminal import console, settings_or_exit

if TYPE_CHECKING:
    from infra.config import Settings
    from ridehail.processes.components import Runtime
    from store.db import Database

T = TypeVar("T")


@contextlib.contextmanager
def unfit_servers_exit() -> Iterator[None]:
    """A server that does not fit ridehail ends the command with its explanation."""
    from events.fitcheck import NatsUnfit
    from ridehail.processes.temporalcheck import TemporalUnfit

    try:
        yield
    except (NatsUnfit, TemporalUnfit) as e:
        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(2) from None


def run_once(name: str, body: Callable[[Runtime], Awaitable[T]], *,
             temporal: bool = False) -> T:
    """Run a one-shot operation with a runtime (no stream or table creation)."""
    settings = settings_or_exit()
    from ridehail.processes.components import runtime

    async def main() -> T:
        async with runtime(settings, name, temporal=temporal, prepare=False) as rt:
            return await body(rt)

    with unfit_servers_exit():
        return asyncio.run(main())


def run_on_database(body: Callable[[Database, Settings], Awaitable[T]]) -> T:
    """Run a one-shot operation that needs the database alone (no stream, no workflow):
    it works while NATS and Temporal are away. Creates no table."""
    settings = settings_or_exit()
    from store.db import Database

    async def main() -> T:
        db = Database(settings.db_url)
        try:
            return await body(db, settings)
        finally:
            db.dispose()

    return asyncio.run(main())
