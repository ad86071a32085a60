"""The database tables: read models, quotes, the payments ledger, offers, the outbox,
the consumers' processed-event records and notifications (CONTRACT.md section 6).

Money is stored in integer cents; times are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from domain.status import RideStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None,
                           dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime stored; use store.tables.utcnow()")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None,
                             dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def _ts(index: bool = False, nullable: bool = False) -> Column[datetime]:
    return Column(UTCDateTime(), index=index, nullable=nullable)


class Ride(SQLModel, table=True):
    """The ride read model, kept by the ride-projector from RIDES."""

    __tablename__ = "rides"
    __table_args__ = (Index("ix_rides_rider_created", "rider_id", "created_at"),)

    ride_id: str = Field(primary_key=True, max_length=64)
    rider_id: str = Field(index=True, max_length=128)
    driver_id: str | None = Field(default=None, index=True, max_length=128)
    status: str = Field(default=RideStatus.REQUESTED, index=True, max_length=32)
    failure_reason: str | None = Field(default=None, max_length=64)
    pickup_lat: float
    pickup_lng: float
    dropoff_lat: float
    dropoff_lng: float
    pickup_zone: str = Field(default="", index=True, max_length=16)  # H3 surge zone
    payment_method: str = Field(default="card", max_length=64)
    quote_id: str | None = Field(default=None, max_length=64)
    currency: str = Field(default="USD", max_length=3)
    quoted_cents: int | None = None
    surge_multiplier: float | None = None
    final_cents: int | None = None
    cancellation_fee_cents: int | None = None
    payment_status: str = Field(default="none", max_length=16)
    authorized_cents: int = 0
    captured_cents: int = 0
    assigned_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(index=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    # why the final fare is not the driver's reported trip: JSON {reason, reported, used}
    fare_adjusted: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class Driver(SQLModel, table=True):
    """Drivers: profile, availability and last known position, indexed by H3 cell."""

    __tablename__ = "drivers"

    driver_id: str = Field(primary_key=True, max_length=128)
    name: str = Field(default="", max_length=200)
    vehicle_make: str = Field(default="", max_length=100)
    vehicle_model: str = Field(default="", max_length=100)
    vehicle_plate: str = Field(default="", max_length=32)
    status: str = Field(default="offline", index=True, max_length=16)
    ride_id: str | None = Field(default=None, max_length=64)
    lat: float | None = None
    lng: float | None = None
    h3_cell: str | None = Field(default=None, index=True, max_length=16)
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Quote(SQLModel, table=True):
    __tablename__ = "quotes"

    quote_id: str = Field(primary_key=True, max_length=64)
    rider_id: str = Field(index=True, max_length=128)
    pickup_lat: float
    pickup_lng: float
    dropoff_lat: float
    dropoff_lng: float
    fare_cents: int
    currency: str = Field(default="USD", max_length=3)
    surge_multiplier: float
    distance_m: int
    duration_s: int
    expires_at: datetime = Field(sa_column=_ts())
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class LedgerEntry(SQLModel, table=True):
    """One payments ledger entry: authorize, capture, void or refund.

    ``idempotency_key`` is derived from the workflow id and the saga step, so a retried or
    replayed activity finds its earlier entry instead of charging twice.
    """

    __tablename__ = "ledger_entries"

    id: int | None = Field(default=None, primary_key=True)
    ride_id: str = Field(index=True, max_length=64)
    kind: str = Field(max_length=16)
    amount_cents: int
    currency: str = Field(default="USD", max_length=3)
    idempotency_key: str = Field(unique=True, max_length=200)
    gateway_ref: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Offer(SQLModel, table=True):
    """A ride offered to one driver; at most one pending per driver."""

    __tablename__ = "offers"

    offer_id: str = Field(primary_key=True, max_length=100)
    ride_id: str = Field(index=True, max_length=64)
    driver_id: str = Field(index=True, max_length=128)
    status: str = Field(default="pending", max_length=16)
    pickup_lat: float
    pickup_lng: float
    dropoff_lat: float
    dropoff_lng: float
    fare_cents: int
    currency: str = Field(default="USD", max_length=3)
    expires_at: datetime = Field(sa_column=_ts())
    # indexed, as is each time a lifetime counts from: housekeeping (store.prune) finds
    # the rows past their lifetime by it
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(index=True))


class TripMeter(SQLModel, table=True):
    """The server's own measure of a trip: the assigned driver's location reports between
    ``trip_started`` and ``trip_ended``, summed as great-circle steps
    (``store.meter``)."""

    __tablename__ = "trip_meters"

    ride_id: str = Field(primary_key=True, max_length=64)
    driver_id: str = Field(index=True, max_length=128)
    points: int = 0
    distance_m: float = 0.0
    last_lat: float | None = None
    last_lng: float | None = None
    started_at: datetime = Field(sa_column=_ts())
    ended_at: datetime | None = Field(default=None, sa_column=_ts(index=True, nullable=True))


class OutboxEvent(SQLModel, table=True):
    """An event committed with the state change it describes, published after commit.
    The table is also the event log, the record of every ride (events.log): rows are
    never deleted, and ``position`` is the order they were written in.

    On SQLite one table, ``event_id`` unique. On PostgreSQL the table is partitioned by
    the month of ``created_at`` (store.partitions, migration 0007), and a partitioned
    table's keys must hold the partition key: the primary key is (position, created_at),
    which this model cannot say beside SQLite's rowid key (Alembic does not compare
    primary keys), and an event id is kept unique by ``outbox_ids``. Positions come from
    one sequence either way, so each is unique alone."""

    __tablename__ = "outbox"
    __table_args__ = (
        # Each write asks whether an earlier event of its ride or driver is still
        # unpublished (events.outbox): this index holds only unpublished rows, so the
        # answer costs the same for a driver with ten thousand events as for a new ride.
        Index("ix_outbox_unpublished", "aggregate_id", "position",
              sqlite_where=text("published_at IS NULL"),
              postgresql_where=text("published_at IS NULL")),
        UniqueConstraint("event_id").ddl_if(dialect="sqlite"),
        Index("ix_outbox_event_id", "event_id").ddl_if(dialect="postgresql"),
    )

    # 64 bits on PostgreSQL: ten rides a second write about 2^31 events in five months;
    # on SQLite INTEGER, the rowid, whatever its size
    position: int | None = Field(default=None, sa_column=Column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True))
    event_id: str = Field(max_length=100)
    aggregate_id: str = Field(index=True, max_length=128)
    subject: str = Field(max_length=255)
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    published_at: datetime | None = Field(default=None, sa_column=_ts(index=True, nullable=True))
    attempts: int = 0


class OutboxId(SQLModel, table=True):
    """PostgreSQL only: the id of each event the outbox stored lately, with where it
    went. A partitioned outbox cannot hold a unique index on ``event_id`` alone, so
    ``events.outbox.stage`` claims the id here first (``ON CONFLICT DO NOTHING``) and
    stores only the events whose id was new: a retried activity's event is stored once,
    even when the retry falls in the next month. Housekeeping prunes the rows older than
    ``RIDEHAIL_OUTBOX_IDS_KEEP_S`` (the store ``outbox_ids`` of store.prune); the outbox
    itself it never prunes."""

    __tablename__ = "outbox_ids"
    __table_args__ = {"info": {"dialects": ("postgresql",)}}

    event_id: str = Field(primary_key=True, max_length=100)
    position: int = Field(sa_column=Column(BigInteger(), nullable=False))
    created_at: datetime = Field(sa_column=_ts(index=True))


class ProcessedEvent(SQLModel, table=True):
    """What a consumer has applied, written in the same transaction as its effect."""

    __tablename__ = "processed_events"
    __table_args__ = (UniqueConstraint("consumer", "event_id"),)

    id: int | None = Field(default=None, primary_key=True)
    consumer: str = Field(max_length=64)
    event_id: str = Field(max_length=100)
    processed_at: datetime = Field(default_factory=utcnow, sa_column=_ts(index=True))


class Notification(SQLModel, table=True):
    __tablename__ = "notifications"

    notification_id: str = Field(primary_key=True, max_length=100)
    user_id: str = Field(index=True, max_length=128)
    ride_id: str | None = Field(default=None, index=True, max_length=64)
    kind: str = Field(max_length=64)
    message: str = Field(max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(index=True))


class IdempotencyKey(SQLModel, table=True):
    """``Idempotency-Key`` of ``POST /v1/rides``, scoped to the rider."""

    __tablename__ = "idempotency_keys"

    rider_id: str = Field(primary_key=True, max_length=128)
    key: str = Field(primary_key=True, max_length=255)
    request_hash: str = Field(max_length=64)
    ride_id: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(index=True))


class RateLimitHit(SQLModel, table=True):
    """Requests counted against a rate limit (api.ratelimit): one row per limited key
    (``<class>:<token subject>`` or ``address:<client address>``), the current fixed
    window and how many requests it has had. Shared by every API process."""

    __tablename__ = "rate_limit_hits"

    key: str = Field(primary_key=True, max_length=200)
    window_start: int = Field(index=True)  # Unix time, seconds, a multiple of the window
    hits: int = 0
