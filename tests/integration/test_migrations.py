"""The migrations and the models describe the same schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from store import migrate, tables  # noqa: F401
from store.db import create_tables, make_engine


def describe(engine: Engine) -> dict:
    """Tables, columns, keys and indexes as the database reports them."""
    insp = inspect(engine)
    out = {}
    for table in sorted(insp.get_table_names()):
        if table == "alembic_version":
            continue
        out[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"])
                        for c in insp.get_columns(table)],
            "pk": insp.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                              for i in insp.get_indexes(table)),
            "unique": sorted(tuple(u["column_names"])
                             for u in insp.get_unique_constraints(table)),
        }
    return out


def test_migrations_reach_the_models(database_url: str) -> None:
    migrate.upgrade(database_url)
    assert migrate.current(database_url) == migrate.head()
    engine = make_engine(database_url)
    with engine.connect() as conn:
        # compared: the outbox's monthly partitions are storage, made by month, not
        # models; a table, index or constraint a model keeps for one kind of database
        # only (the outbox's ids on PostgreSQL) is looked for there alone
        diff = compare_metadata(MigrationContext.configure(conn, opts={
            "compare_type": True, "include_object": migrate.compared(conn.dialect.name)}),
                                SQLModel.metadata)
    engine.dispose()
    assert diff == [], f"the models changed without a migration: {diff}"


def test_created_and_migrated_sqlite_schemas_are_the_same(tmp_path: Path) -> None:
    created = make_engine(f"sqlite:///{tmp_path / 'created.db'}")
    create_tables(created)
    migrated_url = f"sqlite:///{tmp_path / 'migrated.db'}"
    migrate.upgrade(migrated_url)
    migrated = make_engine(migrated_url)
    assert describe(created) == describe(migrated)
    created.dispose()
    migrated.dispose()


def test_db_upgrade_command_is_idempotent(database_url: str) -> None:
    env = {**os.environ, "RIDEHAIL_DATABASE_URL": database_url}
    cmd = [str(Path(sys.executable).parent / "ridehail"), "db", "upgrade"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert f"at revision {migrate.head()}" in first.stderr + first.stdout
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "up to date" in second.stderr + second.stdout


def test_replicas_migrating_at_once_wait_their_turn(database_url: str) -> None:
    """Several processes starting together each migrate the same database: one does the
    work, the others wait for its lock and find it done. (PostgreSQL builds indexes
    concurrently; a waiter holding a snapshot open used to deadlock with it.)"""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's schema is created from the models, under its own write lock")
    with ThreadPoolExecutor(max_workers=3) as pool:
        for done in [pool.submit(migrate.upgrade, database_url) for _ in range(3)]:
            done.result(timeout=120)
    assert migrate.current(database_url) == migrate.head()
