"""The schema: Alembic migrations (``ridehail db upgrade``), which every component also
applies at start on PostgreSQL; the embedded SQLite default creates the tables from the
models. Both end in the same schema (tests/integration/test_migrations.py checks it)."""

from __future__ import annotations

import time

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from store.db import create_tables, make_engine

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
            finally:
                if engine.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"),
                                 {"k": _MIGRATION_LOCK})
                    conn.commit()
    finally:
        engine.dispose()


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
