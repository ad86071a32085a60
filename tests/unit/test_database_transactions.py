"""SQLite transactions run on the event loop when they need not wait, and on a worker
thread when the write lock is held elsewhere: the loop is never blocked on the lock."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from sqlalchemy import text

from ridehail.store.db import Database


def _database(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'tx.db'}")
    with db.engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER)")
        c.exec_driver_sql("INSERT INTO t VALUES ('a', 0)")
    return db


def _bump(session) -> None:  # type: ignore[no-untyped-def]
    session.execute(text("UPDATE t SET n = n + 1"))


def _count(session) -> int:  # type: ignore[no-untyped-def]
    return int(session.execute(text("SELECT n FROM t")).scalar_one())


async def test_a_write_commits_and_a_failing_one_leaves_nothing(tmp_path: Path) -> None:
    db = _database(tmp_path)

    def bump_then_fail(session) -> None:  # type: ignore[no-untyped-def]
        _bump(session)
        raise ValueError("no")

    await db.write(_bump)
    try:
        await db.write(bump_then_fail)
    except ValueError:
        pass
    assert await db.read(_count) == 1


async def test_a_write_that_must_wait_for_the_lock_waits_off_the_loop(tmp_path: Path) -> None:
    db = _database(tmp_path)
    holder = sqlite3.connect(tmp_path / "tx.db", isolation_level=None,
                             check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE t SET n = n + 10")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def release_later() -> None:
        await asyncio.sleep(0.4)
        await asyncio.to_thread(holder.execute, "COMMIT")

    ticking = asyncio.create_task(ticker())
    releasing = asyncio.create_task(release_later())
    await db.write(_bump)  # waits for the holder's commit, then applies on top of it
    await releasing
    ticking.cancel()
    assert ticks >= 20  # the loop ran on while the write waited
    assert await db.read(_count) == 11
    holder.close()
