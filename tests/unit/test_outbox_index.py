"""The outbox's check for an earlier unpublished event of the same ride or driver reads
only unpublished rows (an index of them), however long the aggregate's history."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event, inspect

from events.outbox import Staged, _behind_unpublished
from store.db import Database
from store.tables import utcnow

INDEX = "ix_outbox_unpublished"


def _indexes(db: Database) -> set[str]:
    return {i["name"] for i in inspect(db.engine).get_indexes("outbox")}


def test_the_check_for_earlier_unpublished_events_uses_the_unpublished_index(
        tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'ridehail.db'}")
    db.create_tables()
    seen: list[tuple[str, object]] = []

    @event.listens_for(db.engine, "before_cursor_execute")
    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "FROM outbox" in statement:
            seen.append((statement, parameters))

    with db.reading() as session:
        row = Staged(7, "e7", "d1", "drivers.d1.x", "{}", utcnow())
        assert not _behind_unpublished(session, [row])
    statement, parameters = seen[-1]
    raw = db.engine.raw_connection()
    try:
        plan = raw.cursor().execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
    finally:
        raw.close()
    assert any(INDEX in str(step) for step in plan), plan
    db.dispose()


def test_a_database_made_before_the_index_gains_it_at_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ridehail.db'}"
    older = Database(url)
    older.create_tables()
    with older.engine.begin() as conn:
        conn.exec_driver_sql(f"DROP INDEX {INDEX}")
    assert INDEX not in _indexes(older)
    older.dispose()

    started = Database(url)
    started.create_tables()
    assert INDEX in _indexes(started)
    started.dispose()
