"""The schema: Alembic migrations (``ridehail db upgrade``), which every component also
applies at start on PostgreSQL, then the outbox's partitions for the coming months
(store.partitions); the embedded SQLite default creates the tables from the models. Both
end in the same schema (tests/integration/test_migrations.py checks it)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Table, text
from sqlalchemy.exc import OperationalError

from store.db import create_tables, make_engine, on_dialect
from store.partitions import ensure_month_partitions, is_partition
from store.tables import utcnow

log = logging.getLogger(__name__)

# pg_advisory_lock key: one process at a time migrates (several replicas start at once)
_MIGRATION_LOCK = 0x52494445
_MIGRATION_LOCK_POLL_S = 0.2


def _take_migration_lock(conn: Connection) -> None:
    """Take the migration lock, polling for it between transactions. Waiting inside
    ``pg_advisory_lock`` would hold a snapshot open the whole time, and a migration that
    builds an index ``CONCURRENTLY`` waits for every older snapshot: the waiter and the
    migrator would wait on each other until PostgreSQL ends one as a deadlock."""
    while True:
        taken = conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                             {"k": _MIGRATION_LOCK}).scalar()
        conn.commit()
        if taken:
            return
        time.sleep(_MIGRATION_LOCK_POLL_S)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "store:migrations")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (the latest by default)."""
    config = alembic_config(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                _take_migration_lock(conn)
            try:
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
                conn.commit()
                _partitions_ahead(conn)
            finally:
                if engine.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"),
                                 {"k": _MIGRATION_LOCK})
                    conn.commit()
    finally:
        engine.dispose()


def _partitions_ahead(conn: Connection) -> None:
    """The outbox's partitions for this month and the next two, so a fresh deployment
    (or one whose periodic housekeeping has not run for a while) has them; missed here
    (a lock not had in time), the default partition takes the rows meanwhile."""
    try:
        ensure_month_partitions(conn, utcnow())
        conn.commit()
    except OperationalError as e:
        conn.rollback()
        log.warning("outbox: partitions ahead not created now (%s); the housekeeping "
                    "will", e.orig)


def compared(dialect: str) -> Callable[[object, str | None, str, bool, object], bool]:
    """What a comparison of the models with a database looks at (Alembic's
    ``include_object``): not the outbox's partitions, which are storage made by month
    (store.partitions), not models; and not a model's table or index meant for the
    other kind of database (a table's ``info["dialects"]``, an index's or constraint's
    ``ddl_if``), which Alembic would otherwise expect everywhere."""

    def include(obj: object, name: str | None, type_: str, reflected: bool,
                compare_to: object) -> bool:
        if reflected:
            return not (type_ == "table" and name is not None and is_partition(name))
        if isinstance(obj, Table):
            return on_dialect(obj, dialect)
        only = getattr(obj, "_ddl_if", None)  # SQLAlchemy's record of .ddl_if(...)
        return only is None or only.dialect in (None, dialect)

    return include


def current(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def prepare_schema(url: str) -> None:
    """Make the schema current: migrations on PostgreSQL, the models' tables on SQLite."""
    if url.startswith("sqlite"):
        engine = make_engine(url)
        create_tables(engine)
        engine.dispose()
    else:
        upgrade(url)
