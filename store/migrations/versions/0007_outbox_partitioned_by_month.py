"""the outbox partitioned by month on PostgreSQL

The outbox is the event log: every event ridehail wrote, kept for as long as the operator
keeps it. On PostgreSQL it becomes a table partitioned by the month of ``created_at``
(store.partitions), so an old month leaves it whole (detached, dumped, dropped:
docs/DEPLOY.md) and never by a long ``DELETE``. A partitioned table's keys must hold the
partition key: the primary key becomes (position, created_at), and the uniqueness of
``event_id`` moves to ``outbox_ids``, filled here with the ids of the last
``OUTBOX_IDS_KEEP_S``. Positions become 64-bit and come from the same sequence, so
every row keeps its position and new ones follow on.

The rows are copied, with the outbox locked against writes meanwhile: run it as the job
before the components start, with them stopped. SQLite keeps one table, unchanged.

The downgrade copies the rows back into one table with 32-bit positions (it fails if a
position no longer fits) and keeps the first row of an event id seen twice (possible
only for a retry that came after its id left ``outbox_ids``). Partitions detached for
archiving stay where they are.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = "position, event_id, aggregate_id, subject, body, created_at, published_at, attempts"
INDEXES = {  # name: what it indexes, as in the model
    "ix_outbox_aggregate_id": "(aggregate_id)",
    "ix_outbox_published_at": "(published_at)",
    "ix_outbox_unpublished": "(aggregate_id, position) WHERE published_at IS NULL",
}
MONTHS_AHEAD = 2
# As they were when this migration was written (store.partitions names and makes the
# months after it; a migration imports neither the models nor the code that moves on).
OUTBOX_IDS_KEEP_S = 7 * 24 * 3600
DEFAULT_PARTITION = "outbox_default"


def _month_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def _add_months(start: datetime, months: int) -> datetime:
    index = start.year * 12 + start.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _create_partitions(first: datetime, last: datetime) -> None:
    """The default partition and one a month (``outbox_y2026m01``…) from ``first``'s
    month to ``last``'s, on the new, still empty outbox."""
    op.execute(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF outbox DEFAULT")
    start, end = _month_start(first), _month_start(last)
    while start <= end:
        after = _add_months(start, 1)
        op.execute(f"CREATE TABLE outbox_y{start.year:04d}m{start.month:02d} "
                   f"PARTITION OF outbox FOR VALUES FROM ('{start.isoformat()}') "
                   f"TO ('{after.isoformat()}')")
        start = after


def _create_outbox(position_type: str, keys: str, partitioned: bool) -> None:
    op.execute(f"""
        CREATE TABLE outbox (
            position {position_type} NOT NULL DEFAULT nextval('outbox_position_seq'),
            event_id VARCHAR(100) NOT NULL,
            aggregate_id VARCHAR(128) NOT NULL,
            subject VARCHAR(255) NOT NULL,
            body TEXT NOT NULL,
            created_at TIMESTAMP WITH TIME ZONE NOT NULL,
            published_at TIMESTAMP WITH TIME ZONE,
            attempts INTEGER NOT NULL{keys}
        ){" PARTITION BY RANGE (created_at)" if partitioned else ""}""")
    op.execute("ALTER SEQUENCE outbox_position_seq OWNED BY outbox.position")


def _set_aside(new_name: str, indexes: list[str], constraints: list[str]) -> None:
    """Rename the outbox out of the way, freeing its index and constraint names and its
    sequence, with writers locked out until the migration commits."""
    op.execute("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
    op.execute(f"ALTER TABLE outbox RENAME TO {new_name}")
    for index in indexes:
        op.execute(f"DROP INDEX {index}")
    for constraint in constraints:
        op.execute(f"ALTER TABLE {new_name} DROP CONSTRAINT {constraint}")
    op.execute("ALTER SEQUENCE outbox_position_seq OWNED BY NONE")


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    conn = op.get_bind()
    _set_aside("outbox_unpartitioned", list(INDEXES),
               ["outbox_pkey", "outbox_event_id_key"])
    op.execute("ALTER SEQUENCE outbox_position_seq AS BIGINT")
    _create_outbox("BIGINT", "", partitioned=True)
    oldest, newest = conn.execute(sa.text(
        "SELECT min(created_at), max(created_at) FROM outbox_unpartitioned")).one()
    now = datetime.now(UTC)
    ahead = _add_months(_month_start(now), MONTHS_AHEAD)
    _create_partitions(min(oldest or now, now), max(newest or ahead, ahead))
    op.execute(f"INSERT INTO outbox ({COLUMNS}) SELECT {COLUMNS} FROM outbox_unpartitioned")
    op.execute("ALTER TABLE outbox ADD CONSTRAINT outbox_pkey PRIMARY KEY (position, created_at)")
    for name, what in {**INDEXES, "ix_outbox_event_id": "(event_id)"}.items():
        op.execute(f"CREATE INDEX {name} ON outbox {what}")
    op.execute("DROP TABLE outbox_unpartitioned")

    op.create_table(
        "outbox_ids",
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index("ix_outbox_ids_created_at", "outbox_ids", ["created_at"])
    conn.execute(sa.text(
        "INSERT INTO outbox_ids (event_id, position, created_at) "
        "SELECT event_id, position, created_at FROM outbox WHERE created_at >= :since"),
        {"since": now - timedelta(seconds=OUTBOX_IDS_KEEP_S)})


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    _set_aside("outbox_partitioned", [*INDEXES, "ix_outbox_event_id"], ["outbox_pkey"])
    _create_outbox("INTEGER", ",\n            CONSTRAINT outbox_pkey PRIMARY KEY (position),"
                              "\n            CONSTRAINT outbox_event_id_key UNIQUE (event_id)",
                   partitioned=False)
    op.execute(f"INSERT INTO outbox ({COLUMNS}) SELECT DISTINCT ON (event_id) {COLUMNS} "
               "FROM outbox_partitioned ORDER BY event_id, position")
    op.execute("ALTER SEQUENCE outbox_position_seq AS INTEGER")
    for name, what in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON outbox {what}")
    op.execute("DROP TABLE outbox_partitioned")  # and its partitions
    op.drop_index("ix_outbox_ids_created_at", table_name="outbox_ids")
    op.drop_table("outbox_ids")
