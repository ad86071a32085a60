"""The event log on PostgreSQL: the outbox partitioned by month (docs/DEPLOY.md, "The
event log on PostgreSQL").

Every event ridehail writes stays in ``outbox``, for years. On PostgreSQL the table is
partitioned by ``RANGE (created_at)``, one partition a calendar month (UTC), named
``outbox_y2026m01`` and so on, and a ``DEFAULT`` partition for a row no month partition
takes. An old month leaves the table whole: detached, dumped and dropped, never by a
long ``DELETE``. The months must exist before their rows come: ``ensure_month_partitions``
creates this month and the next ones, at every schema preparation (store.migrate) and
every run of housekeeping (activities.housekeeping); it does nothing where they exist,
and nothing on SQLite, whose outbox is one table.

A partitioned table cannot keep ``event_id`` unique on its own, so the ids of recent
events are claimed in ``outbox_ids`` (store.tables.OutboxId) by the same statement that
stores the events (``STAGE_NEW_EVENTS``); housekeeping prunes them after
``RIDEHAIL_OUTBOX_IDS_KEEP_S`` (the store ``outbox_ids`` of store.prune).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection, Engine

from store.tables import UTCDateTime

log = logging.getLogger(__name__)

PARENT = "outbox"
DEFAULT_PARTITION = "outbox_default"
MONTH_PARTITION = re.compile(r"outbox_y\d{4}m\d{2}")
# The months made ahead of this one: two, so a month's partition exists weeks before its
# first event even if housekeeping stops for a while.
MONTHS_AHEAD = 2
# How long making a partition, outside a migration, waits at most for a lock (on the
# outbox's default partition, briefly) before it gives up until the next call: writers
# queue behind a DDL statement that waits.
LOCK_TIMEOUT_S = 2.0
_MAKING_LOCK = 0x52494446  # pg_advisory_xact_lock key: one process makes partitions

# Claim each event's id in outbox_ids, then store in the outbox only the events whose id
# was new, at the position drawn for it: one statement, so one round trip, and exact
# under concurrency (a second writer of the same id waits for the first's unique-index
# entry, then skips it). The events come as arrays, so the statement's text, and its
# prepared plan, are the same for any number of events.
STAGE_NEW_EVENTS = text("""
WITH given AS (
    SELECT * FROM unnest(CAST(:event_ids AS varchar[]), CAST(:aggregate_ids AS varchar[]),
                         CAST(:subjects AS varchar[]), CAST(:bodies AS text[]))
        WITH ORDINALITY AS g(event_id, aggregate_id, subject, body, n)
), claimed AS (
    INSERT INTO outbox_ids (event_id, position, created_at)
    SELECT event_id, nextval('outbox_position_seq'), :created_at FROM given ORDER BY n
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id, position
)
INSERT INTO outbox (position, event_id, aggregate_id, subject, body, created_at, attempts)
SELECT claimed.position, given.event_id, given.aggregate_id, given.subject, given.body,
       :created_at, 0
FROM claimed JOIN given USING (event_id)
RETURNING event_id, position
""").bindparams(bindparam("created_at", type_=UTCDateTime()))


def month_start(moment: datetime) -> datetime:
    """The first instant (UTC) of ``moment``'s month."""
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def add_months(start: datetime, months: int) -> datetime:
    """The first instant of the month ``months`` after ``start``'s (before, if negative)."""
    index = start.year * 12 + start.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    return f"outbox_y{start.year:04d}m{start.month:02d}"


def is_partition(name: str) -> bool:
    """Whether ``name`` is one of the outbox's partitions (made here, not by a model)."""
    return name == DEFAULT_PARTITION or MONTH_PARTITION.fullmatch(name) is not None


def is_partitioned(conn: Connection) -> bool:
    """Whether this database's outbox is partitioned (PostgreSQL after migration 0007)."""
    if conn.dialect.name != "postgresql":
        return False
    kind = conn.execute(text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"),
                        {"t": PARENT}).scalar()
    return kind == "p"


def _exists(conn: Connection, name: str) -> bool:
    """Whether a table of this name is in the schema tables are made in. Read from
    pg_class with the statement's snapshot: a name look-up (``to_regclass``) may answer
    from this session's catalog cache, which does not yet know of a table another
    process has just made."""
    return conn.execute(text(
        "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = :t"
        " AND relnamespace = current_schema()::regnamespace)"), {"t": name}).scalar_one()


def _literal(moment: datetime) -> str:
    """A timestamptz literal of a partition bound (DDL takes no bound parameters)."""
    return f"'{moment.astimezone(UTC).isoformat()}'"


def _add_month(conn: Connection, start: datetime) -> str:
    """Create ``start``'s month partition: as a table of its own, then attached, which
    locks the outbox only against other schema changes (``CREATE TABLE … PARTITION OF``
    would lock out its writers too). Rows of the month the default partition caught
    meanwhile move into it first, or the attach would fail."""
    name, end = partition_name(start), add_months(start, 1)
    span = {"start": start, "end": end}
    conn.execute(text(f"CREATE TABLE {name} (LIKE {PARENT})"))
    caught = conn.execute(text(
        f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} "
        "WHERE created_at >= :start AND created_at < :end RETURNING *) "
        f"INSERT INTO {name} SELECT * FROM moved"), span).rowcount
    conn.execute(text(f"ALTER TABLE {PARENT} ATTACH PARTITION {name} "
                      f"FOR VALUES FROM ({_literal(start)}) TO ({_literal(end)})"))
    if caught:
        log.warning("outbox: %d event(s) of %s were in the default partition; moved to %s",
                    caught, start.strftime("%Y-%m"), name)
    return name


def _missing(conn: Connection, first: datetime, last: datetime
             ) -> tuple[list[datetime], bool]:
    """The months from ``first``'s to ``last``'s without a partition, and whether the
    default partition exists."""
    missing = [start for start in _months(first, last)
               if not _exists(conn, partition_name(start))]
    return missing, _exists(conn, DEFAULT_PARTITION)


def create_month_partitions(conn: Connection, first: datetime, last: datetime,
                            lock_timeout_s: float | None = None) -> list[str]:
    """Create, in ``conn``'s transaction, the default partition and a partition for each
    month from ``first``'s to ``last``'s where missing; returns the names created. With
    ``lock_timeout_s``, a lock not had within it fails the statement (the caller's
    transaction) instead of making the outbox's writers queue behind it."""
    missing, has_default = _missing(conn, first, last)
    if not missing and has_default:
        return []
    if lock_timeout_s is not None:
        conn.execute(text("SELECT set_config('lock_timeout', :t, true)"),
                     {"t": f"{int(lock_timeout_s * 1000)}ms"})
    # one maker at a time (a component starting while the housekeeping runs): the
    # second finds them made once the first commits
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MAKING_LOCK})
    missing, has_default = _missing(conn, first, last)
    made = []
    if not has_default:
        conn.execute(text(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF {PARENT} DEFAULT"))
        made.append(DEFAULT_PARTITION)
    return made + [_add_month(conn, start) for start in missing]


def _months(first: datetime, last: datetime) -> Iterator[datetime]:
    start, end = month_start(first), month_start(last)
    while start <= end:
        yield start
        start = add_months(start, 1)


@contextmanager
def _transaction(bind: Engine | Connection) -> Iterator[Connection]:
    """A connection in a transaction: the caller's own, or one begun on the engine."""
    if isinstance(bind, Connection):
        yield bind
        return
    with bind.begin() as conn:
        yield conn


def _latest_month(conn: Connection) -> datetime | None:
    """The start of the latest month the outbox has a partition for."""
    names = [name for name in partitions(conn) if MONTH_PARTITION.fullmatch(name)]
    if not names:
        return None
    latest = max(names)  # outbox_yYYYYmMM sorts by date
    return datetime(int(latest[8:12]), int(latest[13:15]), 1, tzinfo=UTC)


def ensure_month_partitions(bind: Engine | Connection, now: datetime,
                            ahead: int = MONTHS_AHEAD,
                            lock_timeout_s: float | None = LOCK_TIMEOUT_S) -> list[str]:
    """Make sure the outbox has partitions for ``now``'s month and the ``ahead`` months
    after it (and for any month since its latest partition, should calls have stopped
    for a while), and its default partition; returns the names created (none when they
    all exist, and none on SQLite or an outbox not partitioned). Idempotent, and cheap when
    there is nothing to do (a look-up per month): call it at start and periodically, more
    often than once a month. Given an engine it commits what it made; given a
    connection, it works in that connection's transaction and the caller commits."""
    with _transaction(bind) as conn:
        if not is_partitioned(conn):
            return []
        first = month_start(now)
        latest = _latest_month(conn)
        if latest is not None and latest < first:  # months missed: made now, in order
            first = add_months(latest, 1)
        made = create_month_partitions(conn, first, add_months(month_start(now), ahead),
                                       lock_timeout_s)
    if made:
        log.info("outbox: partitions created: %s", ", ".join(made))
    return made


def partitions(conn: Connection) -> Sequence[str]:
    """The outbox's partitions, by name (PostgreSQL)."""
    return conn.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(:t) ORDER BY c.relname"), {"t": PARENT}
    ).scalars().all()
