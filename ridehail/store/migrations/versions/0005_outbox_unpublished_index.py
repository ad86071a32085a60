"""an index of the outbox's unpublished rows by aggregate

Every write asks whether an earlier event of the same ride or driver is still
unpublished; with only the aggregate's index that look-up read the aggregate's whole
history, which for a driver's location reports grows all day.

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

UNPUBLISHED = sa.text("published_at IS NULL")


def upgrade() -> None:
    op.create_index("ix_outbox_unpublished", "outbox", ["aggregate_id", "position"],
                    postgresql_where=UNPUBLISHED, sqlite_where=UNPUBLISHED)


def downgrade() -> None:
    op.drop_index("ix_outbox_unpublished", table_name="outbox")
