"""rides without last_event_seq

The ride's read model is updated in the transaction that writes each event, before the
event has a stream sequence; the ride-projector's position in the stream is the
consumer's own (``/metrics``), not a column of every ride.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rides") as batch_op:
        batch_op.drop_column("last_event_seq")


def downgrade() -> None:
    with op.batch_alter_table("rides") as batch_op:
        batch_op.add_column(
            sa.Column("last_event_seq", sa.BigInteger(), nullable=False, server_default="0")
        )
