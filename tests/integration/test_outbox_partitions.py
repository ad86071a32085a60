"""The event log on PostgreSQL, partitioned by month (store.partitions, migration 0007):
the migration keeps every event where it was, each event goes to its month's partition,
an event id is stored once even when its retry comes in the next month or at the same
moment, a month detached and archived as docs/DEPLOY.md says leaves the rest as it was,
and the partitions ahead are made once however often they are asked for."""

from __future__ import annotations

import contextlib
import gzip
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import make_url

from events import outbox
from events.envelope import CloudEvent
from events.outbox import Staged, _behind_unpublished, stage
from store import migrate
from store.db import Database, make_engine
from store.partitions import (
    DEFAULT_PARTITION,
    add_months,
    create_month_partitions,
    ensure_month_partitions,
    month_start,
    partition_name,
    partitions,
)
from store.prune import OUTBOX_IDS, STORES, Lifetimes, prune_store
from store.tables import utcnow

THIS_MONTH = month_start(utcnow())
COLUMNS = "position, event_id, aggregate_id, subject, body, created_at, published_at, attempts"


@pytest.fixture
def db(postgres_url: str) -> Iterator[Database]:
    migrate.upgrade(postgres_url)
    database = Database(postgres_url)
    yield database
    database.dispose()


def an_event(ride_id: str, event_id: str | None = None) -> CloudEvent:
    return CloudEvent(id=event_id or str(uuid.uuid4()), source="ridehail/test",
                      type="ride.requested", subject=ride_id, time=utcnow(),
                      dataversion=1, data={})


def write_at(monkeypatch: pytest.MonkeyPatch, db: Database, moment: datetime,
             *events: CloudEvent) -> list[Staged]:
    """Stage ``events`` in one transaction as if written at ``moment``."""
    monkeypatch.setattr(outbox, "utcnow", lambda: moment)
    with db.writing() as session:
        return stage(session, events)


def where_stored(db: Database, event_id: str) -> list[str]:
    """The partitions holding rows of this event id, one entry a row."""
    with db.reading() as session:
        return list(session.execute(text(
            "SELECT tableoid::regclass::text FROM outbox WHERE event_id = :id"),
            {"id": event_id}).scalars())


def history(db: Database, ride_id: str) -> list[str]:
    with db.reading() as session:
        return list(session.execute(text(
            "SELECT event_id FROM outbox WHERE aggregate_id = :r ORDER BY position"),
            {"r": ride_id}).scalars())


def _fill_old_outbox(url: str) -> None:
    """Events of four months, more than a year apart at the ends, some unpublished, and a
    position skipped (a rolled-back insert does that), in the outbox before migration 0007."""
    engine = make_engine(url)
    with engine.begin() as conn:
        for k, month in enumerate((14, 13, 1, 0)):
            created = (utcnow() - timedelta(hours=1) if month == 0
                       else add_months(THIS_MONTH, -month) + timedelta(days=3, hours=k))
            for n in range(3):
                conn.execute(text(
                    "INSERT INTO outbox (event_id, aggregate_id, subject, body, created_at,"
                    " published_at, attempts) VALUES (:id, :ride, 'rides.x.requested', '{}',"
                    " :created, CASE WHEN :n = 0 THEN NULL ELSE :created END, :n)"),
                    {"id": f"old-{month}-{n}", "ride": f"ride-{n}", "created": created, "n": n})
            conn.execute(text("SELECT nextval('outbox_position_seq')"))
    engine.dispose()


def _rows(url: str) -> list[tuple[object, ...]]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text(
            f"SELECT {COLUMNS}, tableoid::regclass::text FROM outbox ORDER BY position"))]
    engine.dispose()
    return rows


def test_the_migration_keeps_every_event_and_position(postgres_url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    migrate.upgrade(postgres_url, "0006")
    _fill_old_outbox(postgres_url)
    before = [row[:-1] for row in _rows(postgres_url)]
    migrate.upgrade(postgres_url)

    after = _rows(postgres_url)
    assert [row[:-1] for row in after] == before
    for row in after:  # each in its own month's partition
        assert row[-1] == partition_name(month_start(row[5])), row
    db = Database(postgres_url)
    with db.reading() as session:
        made = set(partitions(session.connection()))
        kind = session.execute(text(
            "SELECT data_type FROM information_schema.sequences WHERE "
            "sequence_name = 'outbox_position_seq' AND sequence_schema = current_schema()"
        )).scalar_one()
    # every month from the oldest event's to two months ahead, gaps too, and the default
    assert made == {DEFAULT_PARTITION} | {partition_name(add_months(THIS_MONTH, k))
                                          for k in range(-14, 3)}
    assert kind == "bigint"
    # the ids of the last days are claimed: their retry is not stored again
    assert write_at(monkeypatch, db, utcnow(), an_event("ride-0", "old-0-1")) == []
    added = write_at(monkeypatch, db, utcnow(), an_event("ride-0"))
    assert added[0].position > max(row[0] for row in before)  # the sequence goes on
    db.dispose()


def test_the_downgrade_gives_back_one_table_with_the_same_events(postgres_url: str) -> None:
    migrate.upgrade(postgres_url, "0006")
    _fill_old_outbox(postgres_url)
    before = [row[:-1] for row in _rows(postgres_url)]
    migrate.upgrade(postgres_url)
    command.downgrade(migrate.alembic_config(postgres_url), "0006")
    assert [row[:-1] for row in _rows(postgres_url)] == before
    assert {row[-1] for row in _rows(postgres_url)} == {"outbox"}
    migrate.upgrade(postgres_url)
    assert [row[:-1] for row in _rows(postgres_url)] == before


def test_each_event_goes_to_its_months_partition(db: Database,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for k in range(3):  # this month and the two ahead
        moment = add_months(THIS_MONTH, k) + timedelta(days=1)
        [row] = write_at(monkeypatch, db, moment, an_event("ride-1"))
        assert where_stored(db, row.event_id) == [partition_name(add_months(THIS_MONTH, k))]
    # no partition yet for a month further ahead: the default partition takes it
    [far] = write_at(monkeypatch, db, add_months(THIS_MONTH, 5), an_event("ride-1"))
    assert where_stored(db, far.event_id) == [DEFAULT_PARTITION]
    assert len(history(db, "ride-1")) == 4


def test_a_retry_in_the_next_month_is_not_stored_again(db: Database,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    boundary = add_months(THIS_MONTH, 2)
    event = an_event("ride-2")
    first = write_at(monkeypatch, db, boundary - timedelta(seconds=1), event, event)
    assert [r.event_id for r in first] == [event.id]  # an id given twice: stored once
    assert write_at(monkeypatch, db, boundary + timedelta(seconds=1), event) == []
    assert where_stored(db, event.id) == [partition_name(add_months(THIS_MONTH, 1))]


class _RolledBack(Exception):
    pass


@pytest.mark.parametrize("first_commits", [True, False])
def test_the_same_event_written_at_once_is_stored_once(db: Database, first_commits: bool) -> None:
    """Two writers of one event id: the second waits for the first's claim on the id,
    then stores nothing if the first committed, or the event if it rolled back."""
    event = an_event("ride-3")
    second: list[list[Staged]] = []

    def write_second() -> None:
        with db.writing() as session:
            second.append(stage(session, [event]))

    other = threading.Thread(target=write_second)
    with contextlib.suppress(_RolledBack), db.writing() as session:
        assert [r.event_id for r in stage(session, [event])] == [event.id]
        other.start()
        other.join(timeout=1.0)
        assert other.is_alive()  # waiting on the first writer's claim
        if not first_commits:
            raise _RolledBack
    other.join(timeout=10)
    assert [r.event_id for r in second[0]] == ([] if first_commits else [event.id])
    assert len(where_stored(db, event.id)) == 1


def _libpq(url: str) -> tuple[str, str]:
    """A URL pg_dump and psql take, and the test's schema."""
    parsed = make_url(url)
    schema = parsed.query["options"].split("=", 1)[1]
    return parsed.set(drivername="postgresql", query={}).render_as_string(False), schema


@pytest.mark.skipif(shutil.which("pg_dump") is None or shutil.which("psql") is None,
                    reason="pg_dump and psql are not installed")
def test_a_month_detached_and_archived_leaves_the_rest_readable(
        db: Database, postgres_url: str, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    old, older = add_months(THIS_MONTH, -1), add_months(THIS_MONTH, -2)
    with db.engine.begin() as conn:
        create_month_partitions(conn, older, old)
    # a ride over the boundary of the two past months, and one this month
    a1 = write_at(monkeypatch, db, old - timedelta(minutes=1), an_event("ride-a"))[0]
    a2 = write_at(monkeypatch, db, old + timedelta(minutes=1), an_event("ride-a"))[0]
    b = write_at(monkeypatch, db, utcnow(), an_event("ride-b"))[0]
    month, (conninfo, schema) = partition_name(older), _libpq(postgres_url)
    dump = tmp_path / f"{month}.sql.gz"

    # docs/DEPLOY.md, "Archiving a month"
    with db.engine.begin() as conn:
        conn.execute(text("SET lock_timeout = '2s'"))
        conn.execute(text(f"ALTER TABLE outbox DETACH PARTITION {month}"))
    dumped = subprocess.run(["pg_dump", f"--table={schema}.{month}", conninfo],
                            capture_output=True, check=True, timeout=60).stdout
    dump.write_bytes(gzip.compress(dumped))
    with db.engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {month}"))

    assert history(db, "ride-a") == [a2.event_id]  # what its kept months hold
    assert history(db, "ride-b") == [b.event_id]
    later = write_at(monkeypatch, db, utcnow(), an_event("ride-a"))
    with db.writing() as session:  # what every write asks still reads what is kept
        assert _behind_unpublished(session, later)  # a2, unpublished for a month
        outbox.Outbox._mark_published(session, [a2.event_id], a2.created_at)
    with db.reading() as session:
        assert not _behind_unpublished(session, later)
    assert ensure_month_partitions(db.engine, utcnow()) == []  # not made again

    # and back, should it be wanted
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", conninfo],
                   input=gzip.decompress(dump.read_bytes()), capture_output=True,
                   check=True, timeout=60)
    with db.engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE outbox ATTACH PARTITION {month} FOR VALUES FROM "
                          f"('{older.isoformat()}') TO ('{old.isoformat()}')"))
    assert history(db, "ride-a") == [a1.event_id, a2.event_id, later[0].event_id]


def test_making_the_partitions_ahead_is_idempotent(db: Database,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with db.reading() as session:
        made = list(partitions(session.connection()))
    assert ensure_month_partitions(db.engine, utcnow()) == []  # the upgrade made them
    later = add_months(THIS_MONTH, 4) + timedelta(days=2)
    # an event of a month not made yet waits in the default partition...
    [row] = write_at(monkeypatch, db, later, an_event("ride-4"))
    assert where_stored(db, row.event_id) == [DEFAULT_PARTITION]
    # ...and moves into its month's partition when that is made
    new = ensure_month_partitions(db.engine, later, ahead=1)
    assert new == [partition_name(add_months(THIS_MONTH, k)) for k in (3, 4, 5)]
    assert where_stored(db, row.event_id) == [partition_name(add_months(THIS_MONTH, 4))]
    assert ensure_month_partitions(db.engine, later, ahead=1) == []
    with db.engine.begin() as conn:
        assert ensure_month_partitions(conn, later, ahead=1) == []
        assert list(partitions(conn)) == sorted([*made, *new])


async def test_old_ids_are_pruned_in_batches_and_the_events_stay(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Housekeeping's store ``outbox_ids`` (store.prune): the claims go, the events stay."""
    now = utcnow()
    old = [write_at(monkeypatch, db, now - timedelta(days=8), an_event("ride-5"))[0]
           for _ in range(3)]
    recent = write_at(monkeypatch, db, now, an_event("ride-5"))[0]
    batches: list[int] = []
    keep = Lifetimes(keep_s={**dict.fromkeys(STORES, 0.0), OUTBOX_IDS: 7 * 86400})
    removed = await prune_store(db, OUTBOX_IDS, now - timedelta(days=7), keep, batch=2,
                                progress=lambda _, n: batches.append(n))
    assert removed == 3 and batches == [2, 1]
    with db.reading() as session:
        claimed = session.execute(text("SELECT event_id FROM outbox_ids")).scalars().all()
    assert claimed == [recent.event_id]
    assert history(db, "ride-5") == [r.event_id for r in [*old, recent]]
    assert write_at(monkeypatch, db, now, an_event("ride-5", recent.event_id)) == []


def test_two_processes_making_the_same_months_at_once_both_succeed(db: Database) -> None:
    later = add_months(THIS_MONTH, 7)
    with ThreadPoolExecutor(2) as pool:
        made = list(pool.map(lambda _: ensure_month_partitions(db.engine, later, ahead=1),
                             range(2)))
    expected = [partition_name(add_months(THIS_MONTH, k)) for k in range(3, 9)]
    assert sorted(made, key=len) == [[], expected]
