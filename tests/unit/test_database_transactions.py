"""SQLite transactions run on the event loop when they need not wait, and on a worker
thread when the write lock is held elsewhere: the loop is never blocked on the lock.
Writers take turns, within a process and across processes, and lose no update."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from pathlib import Path

from sqlalchemy import text

from store.db import Database


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


async def test_writers_of_one_process_take_turns_and_lose_no_update(tmp_path: Path) -> None:
    db = _database(tmp_path)
    holder = sqlite3.connect(tmp_path / "tx.db", isolation_level=None,
                             check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process's transaction, say
    writes = [asyncio.create_task(db.write(_bump)) for _ in range(20)]
    await asyncio.sleep(0.1)
    assert not any(w.done() for w in writes)  # waiting, and the loop runs on
    holder.execute("COMMIT")
    await asyncio.gather(*writes)
    assert await db.read(_count) == 20
    holder.close()


def _bump_many(url: str, tasks: int, each: int) -> None:
    async def run() -> None:
        db = Database(url)

        async def one() -> None:
            for _ in range(each):
                await db.write(_bump)

        await asyncio.gather(*(one() for _ in range(tasks)))
        db.dispose()

    asyncio.run(run())


def test_writers_of_two_processes_lose_no_update(tmp_path: Path) -> None:
    db = _database(tmp_path)
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=_bump_many, args=(db.url, 4, 50)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert asyncio.run(db.read(_count)) == 2 * 4 * 50
    db.dispose()
