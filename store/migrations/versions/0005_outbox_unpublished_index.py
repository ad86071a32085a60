"""an index of the outbox's unpublished rows by aggregate

Every write asks whether an earlier event of the same ride or driver is still
unpublished; with only the aggregate's index that look-up read the aggregate's whole
history, which for a driver's location reports grows all day.

On PostgreSQL the index is built concurrently: the outbox keeps every event, and a plain
build would hold back every write for as long as it reads the table. (Should that build
fail, PostgreSQL keeps an invalid index of this name: drop it and start again.)

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NAME = "ix_outbox_unpublished"
UNPUBLISHED = sa.text("published_at IS NULL")


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index(NAME, "outbox", ["aggregate_id", "position"],
                            postgresql_where=UNPUBLISHED, postgresql_concurrently=True)
    else:
        op.create_index(NAME, "outbox", ["aggregate_id", "position"],
                        sqlite_where=UNPUBLISHED)


def downgrade() -> None:
    op.drop_index(NAME, table_name="outbox")
