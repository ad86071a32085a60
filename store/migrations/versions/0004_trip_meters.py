"""trip meters, and the fare adjustment on rides

The server's own measure of each trip (distance from the driver's location reports
between trip start and end), against which the driver's reported figures are checked.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trip_meters",
        sa.Column("ride_id", sa.String(length=64), nullable=False),
        sa.Column("driver_id", sa.String(length=128), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("distance_m", sa.Float(), nullable=False),
        sa.Column("last_lat", sa.Float(), nullable=True),
        sa.Column("last_lng", sa.Float(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("ride_id"),
    )
    with op.batch_alter_table("trip_meters") as batch_op:
        batch_op.create_index(batch_op.f("ix_trip_meters_driver_id"), ["driver_id"],
                              unique=False)
    with op.batch_alter_table("rides") as batch_op:
        batch_op.add_column(sa.Column("fare_adjusted", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rides") as batch_op:
        batch_op.drop_column("fare_adjusted")
    with op.batch_alter_table("trip_meters") as batch_op:
        batch_op.drop_index(batch_op.f("ix_trip_meters_driver_id"))
    op.drop_table("trip_meters")
