"""The database engine and the unit-of-work helpers every component uses.

SQLite (the embedded default) runs in WAL mode with ``BEGIN IMMEDIATE`` for transactions
that write, so two writers never fail on a lock upgrade. SQLite transactions run right
on the event loop: a read (WAL readers never wait for writers) and a write once its
``BEGIN IMMEDIATE`` gets the lock. A process's writers take turns (an asyncio lock, first
come first served); while another process holds SQLite's lock, the writer whose turn it
is asks again every millisecond or two, on the loop, and only after ``WAIT_ON_LOOP_S``
goes to a worker thread to wait on the busy timeout (a long transaction elsewhere: a
migration, a ``sqlite3`` shell). Waiting on a worker thread from the start, as writes
once did, cost 40 to 50 ms a contended write under ``ridehail bench``: the busy timeout
polls with sleeps of up to 100 ms, and the thread then waits for the GIL at each of the
driver's calls while the loop runs. PostgreSQL transactions always run on a worker
thread (each waits on the network). PostgreSQL runs at READ COMMITTED; the places that
need more (driver reservation, idempotency keys) use conditional updates and unique
constraints, and say so.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Insert, Table, event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, SQLModel, create_engine

T = TypeVar("T")

BUSY_TIMEOUT_MS = 30_000
# How long a SQLite writer asks again on the event loop before it waits on a thread, and
# how long it sleeps between asks: the first pause, doubling up to the longest.
WAIT_ON_LOOP_S = 0.5
FIRST_PAUSE_S = 0.0005
LONGEST_PAUSE_S = 0.002


class _Busy(Exception):
    """SQLite's write lock is held elsewhere: this write must wait on a worker thread."""


def _is_locked(e: Exception) -> bool:
    """SQLITE_BUSY, from the driver or wrapped by SQLAlchemy."""
    message = str(getattr(e, "orig", e))
    return "locked" in message or "busy" in message


def table_of(model: type[SQLModel]) -> Table:
    """The Core table of a table model, for the statements built once (SQLModel's
    classes do not declare their ``__table__``)."""
    table = sa_inspect(model).local_table
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not a table model")
    return table


_INSERTS: dict[tuple[object, ...], Insert] = {}  # built once per database kind and shape


def insert_unless_present(session: Session, table: Table, key: list[str],
                          returning: tuple[str, ...] = ()) -> Insert:
    """A Core ``INSERT … ON CONFLICT (key) DO NOTHING`` for the session's database: one
    statement where a look-up and an insert would take two, and safe against a
    concurrent insert of the same key. The hot paths (the outbox, processed-event
    records) use Core statements, built once; the ORM's unit of work costs several
    times as much. ``returning`` names columns of the inserted rows to return."""
    dialect = session.get_bind().dialect.name
    cache_key = (dialect, table.name, tuple(key), returning)
    stmt = _INSERTS.get(cache_key)
    if stmt is None:
        module = postgresql if dialect == "postgresql" else sqlite
        stmt = module.insert(table).on_conflict_do_nothing(index_elements=key)
        if returning:
            stmt = stmt.returning(*(table.c[name] for name in returning))
        _INSERTS[cache_key] = stmt
    return stmt


def create_private(path: Path) -> None:
    """Create an empty database file readable by its owner alone (0600), unless it
    exists. SQLite would create it with the umask's mode (world-readable, usually), and
    gives its -wal, -shm and -journal files the database file's mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            if "///" in url and not path.startswith("file:"):
                create_private(Path(path.split("?", 1)[0]))
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30, "isolation_level": None},
            pool_size=16,
            max_overflow=16,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # The driver's own transaction handling is off (isolation_level=None); we begin
            # here so writers take the lock up front and wait for it on the busy timeout.
            # straight to the driver: these run for every transaction, and SQLAlchemy's
            # statement machinery would cost several times the statements themselves
            raw = conn.connection.dbapi_connection
            assert raw is not None  # a connection being begun is open
            options = conn.get_execution_options()
            if not options.get("sqlite_now", False):
                raw.execute(
                    "BEGIN IMMEDIATE" if options.get("sqlite_immediate", False) else "BEGIN")
                return
            # on the event loop: take the lock now or fail at once (Busy), never wait
            raw.execute("PRAGMA busy_timeout=0")
            try:
                raw.execute("BEGIN IMMEDIATE")
            finally:
                raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

        return engine
    return create_engine(url, pool_size=16, max_overflow=16, pool_pre_ping=True)


def on_dialect(table: Table, dialect: str) -> bool:
    """Whether ``table`` belongs on this kind of database: a model says so with
    ``info={"dialects": (...)}`` (store.tables.OutboxId is PostgreSQL's alone)."""
    return dialect in table.info.get("dialects", (dialect,))


def create_tables(engine: Engine) -> None:
    """Create the tables the models declare for this kind of database, and the indexes a
    model gained after its table was created (``create_all`` leaves an existing table as
    it is)."""
    from store import tables  # noqa: F401  (registers the tables on the metadata)

    dialect = engine.dialect.name
    mine = [t for t in SQLModel.metadata.sorted_tables if on_dialect(t, dialect)]
    SQLModel.metadata.create_all(engine, tables=mine)
    for table in mine:
        for index in table.indexes:
            index.create(engine, checkfirst=True)  # not where its ddl_if names another


class Database:
    """A process's database: sessions for reads and writes, run off the event loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._writer = self.engine.execution_options(sqlite_immediate=True)
        self._writer_now = (self.engine.execution_options(sqlite_now=True)
                            if self.is_sqlite else None)
        self._turns: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def create_tables(self) -> None:
        create_tables(self.engine)

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on error."""
        with Session(self._writer, expire_on_commit=False) as session:
            with session.begin():
                yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    def _turn(self) -> asyncio.Lock:
        """This process's writers' turns, on the running loop."""
        loop = asyncio.get_running_loop()
        if self._turns is None or self._turns[0] is not loop:
            self._turns = (loop, asyncio.Lock())
        return self._turns[1]

    async def write(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in a write transaction: on SQLite on the loop, in turn with this
        process's other writers, once SQLite's lock is free (on a worker thread if
        another process holds it for long); on PostgreSQL on a worker thread."""
        if self._writer_now is not None:
            loop = asyncio.get_running_loop()
            async with self._turn():
                deadline = loop.time() + WAIT_ON_LOOP_S
                pause = FIRST_PAUSE_S
                while True:
                    try:
                        return self._write_now(fn)
                    except _Busy:
                        if loop.time() >= deadline:
                            break
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, LONGEST_PAUSE_S)

        def run() -> T:
            with self.writing() as session:
                return fn(session)

        return await asyncio.to_thread(run)

    def _write_now(self, fn: Callable[[Session], T]) -> T:
        assert self._writer_now is not None
        with Session(self._writer_now, expire_on_commit=False) as session:
            with session.begin():
                try:
                    session.connection()  # BEGIN IMMEDIATE, before any of fn runs
                except (OperationalError, sqlite3.OperationalError) as e:
                    if _is_locked(e):
                        raise _Busy from e
                    raise
                return fn(session)

    async def read(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in a read transaction: on SQLite right here (WAL readers do not
        wait for writers), on PostgreSQL on a worker thread."""

        def run() -> T:
            with self.reading() as session:
                return fn(session)

        if self.is_sqlite:
            return run()
        return await asyncio.to_thread(run)

    def dispose(self) -> None:
        self.engine.dispose()
