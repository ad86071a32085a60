"""The rules of the outbox's monthly partitions that need no database server: the months
and their names, what a schema comparison looks at on each kind of database, and the
SQLite outbox staying one table with its unique event id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from infra.config import Settings
from store.db import create_tables, make_engine, table_of
from store.migrate import alembic_config, compared
from store.partitions import add_months, is_partition, month_start, partition_name
from store.tables import OutboxEvent, OutboxId


def test_months_and_their_names_across_a_year() -> None:
    december = month_start(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert december == datetime(2026, 12, 1, tzinfo=UTC)
    assert add_months(december, 1) == datetime(2027, 1, 1, tzinfo=UTC)
    assert add_months(december, -12) == datetime(2025, 12, 1, tzinfo=UTC)
    assert add_months(december, 14) == datetime(2028, 2, 1, tzinfo=UTC)
    assert [partition_name(add_months(december, k)) for k in range(2)] == [
        "outbox_y2026m12", "outbox_y2027m01"]


def test_a_month_is_taken_in_utc() -> None:
    east = timezone(timedelta(hours=3))
    assert month_start(datetime(2027, 1, 1, 1, 0, tzinfo=east)) == datetime(
        2026, 12, 1, tzinfo=UTC)


def test_the_partitions_are_known_by_name() -> None:
    assert is_partition("outbox_y2026m01") and is_partition("outbox_default")
    assert not is_partition("outbox") and not is_partition("outbox_ids")
    assert not is_partition("outbox_y2026m01_old")


def test_a_comparison_looks_at_what_belongs_on_its_database() -> None:
    outbox, ids = table_of(OutboxEvent), table_of(OutboxId)
    [unique] = [c for c in outbox.constraints if c.__class__.__name__ == "UniqueConstraint"]
    [by_id] = [i for i in outbox.indexes if i.name == "ix_outbox_event_id"]
    sqlite, postgresql = compared("sqlite"), compared("postgresql")
    assert not sqlite(ids, "outbox_ids", "table", False, None)
    assert postgresql(ids, "outbox_ids", "table", False, None)
    assert sqlite(unique, None, "unique_constraint", False, None)
    assert not postgresql(unique, None, "unique_constraint", False, None)
    assert postgresql(by_id, by_id.name, "index", False, None)
    assert not sqlite(by_id, by_id.name, "index", False, None)
    # partitions are storage, not models: never reported as tables to drop
    assert not postgresql(None, "outbox_y2026m12", "table", True, None)
    assert postgresql(None, "outbox", "table", True, outbox)


def test_the_sqlite_outbox_stays_one_table_with_a_unique_event_id(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'ridehail.db'}")
    create_tables(engine)
    insp = inspect(engine)
    assert "outbox_ids" not in insp.get_table_names()
    assert [u["column_names"] for u in insp.get_unique_constraints("outbox")] == [["event_id"]]
    assert insp.get_pk_constraint("outbox")["constrained_columns"] == ["position"]
    engine.dispose()


def test_the_setting_and_the_migration_keep_ids_as_long() -> None:
    """The migration that made outbox_ids filled it with the ids of the setting's
    default lifetime (a migration keeps its own copy of what it used)."""
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    migration = scripts.get_revision("0007")
    assert migration is not None and "outbox_partitioned_by_month" in migration.path
    assert (Settings.model_fields["outbox_ids_keep_s"].default
            == migration.module.OUTBOX_IDS_KEEP_S)

