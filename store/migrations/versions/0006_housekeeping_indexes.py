"""indexes of the times housekeeping prunes by

Housekeeping (store.prune) deletes the rows of each table that grows with traffic once
they are past their lifetime, a small batch at a time; each batch finds its rows by the
time the lifetime counts from. Without these indexes each batch would read the whole
table.

On PostgreSQL the indexes are built concurrently: these tables hold every row since the
first ride until the first prune, and a plain build would hold back every write for as
long as it reads the table. (Should a build fail, PostgreSQL keeps an invalid index of
that name: drop it and start again.)

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# (index, table, column)
INDEXES = (
    ("ix_processed_events_processed_at", "processed_events", "processed_at"),
    ("ix_idempotency_keys_created_at", "idempotency_keys", "created_at"),
    ("ix_offers_created_at", "offers", "created_at"),
    ("ix_notifications_created_at", "notifications", "created_at"),
    ("ix_trip_meters_ended_at", "trip_meters", "ended_at"),
)


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            for name, table, column in INDEXES:
                op.create_index(name, table, [column], postgresql_concurrently=True)
    else:
        for name, table, column in INDEXES:
            op.create_index(name, table, [column])


def downgrade() -> None:
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)
