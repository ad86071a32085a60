"""Housekeeping: the rows of the tables that grow with every ride, deleted once they are
past their lifetime (CONTRACT.md section 6).

Each table that grows with traffic is a *store* here, named by its table, with the
condition that says a row is past its lifetime: processed-event records, idempotency
keys, rate-limit windows, notifications, the closed offers and settled trips' meters
of rides that have ended, and on PostgreSQL the claims of event ids that keep an event
stored once in the partitioned event log (``outbox_ids``, store.partitions). A store
whose table this kind of database does not have (``outbox_ids`` on SQLite) removes
nothing and reports 0. The money records (``ledger_entries``) and the event log
(``outbox``) are not stores: nothing here ever deletes them.

Rows go in small batches, each its own short transaction: one statement deletes at most
``BATCH`` rows chosen by primary key (``DELETE … WHERE key IN (SELECT key … LIMIT n)``,
on SQLite and PostgreSQL alike), so no writer waits behind a long delete, and a run cut
short (a kill, a lost connection) has lost nothing: what it deleted was past its
lifetime, and the next run carries on. The delete says the condition again beside the
keys, so a row that changed since it was chosen (a rate-limit window counted again, an
offer answered) is kept. Every condition reads an indexed column.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Delete, Select, Table, delete, exists, func, select, tuple_
from sqlmodel import Session, SQLModel

from domain.status import FINAL
from store.db import Database, on_dialect, table_of
from store.tables import (
    IdempotencyKey,
    LedgerEntry,
    Notification,
    Offer,
    OutboxId,
    ProcessedEvent,
    RateLimitHit,
    Ride,
    TripMeter,
    utcnow,
)

BATCH = 1000  # rows a transaction: a few milliseconds of a writer's time
# Between two batches the database is left to other writers for a moment: SQLite has one
# writer at a time, and on SQLite a batch runs on the event loop, which this gives back.
BATCH_PAUSE_S = 0.002

# The stores, in the order a run prunes them and a report lists them.
PROCESSED_EVENTS = "processed_events"
IDEMPOTENCY_KEYS = "idempotency_keys"
RATE_LIMIT_HITS = "rate_limit_hits"
OFFERS = "offers"
NOTIFICATIONS = "notifications"
TRIP_METERS = "trip_meters"
OUTBOX_IDS = "outbox_ids"  # PostgreSQL's alone
STORES = (PROCESSED_EVENTS, IDEMPOTENCY_KEYS, RATE_LIMIT_HITS, OFFERS, NOTIFICATIONS,
          TRIP_METERS, OUTBOX_IDS)

# A hold captured or voided (activities.payments): the trip's fare is settled, and
# nothing reads its meter again.
SETTLED = ("capture", "void")

Progress = Callable[[str, int], None]  # (store, rows a batch deleted)


@dataclass(frozen=True)
class Lifetimes:
    """How long each store keeps a row, in seconds (``keep_s``, by store), and the
    rate limits' window, which a rate-limit row's lifetime counts from the end of."""

    keep_s: Mapping[str, float]
    rate_limit_window_s: int = 60

    def __post_init__(self) -> None:
        missing = set(STORES) - set(self.keep_s)
        if missing:
            raise ValueError(f"no lifetime for {sorted(missing)}")


def _ride_ended(ride_id: ColumnElement[str]) -> ColumnElement[bool]:
    """The ride of ``ride_id`` has ended (its read model says completed, cancelled or
    failed): its saga is over."""
    rides = table_of(Ride).c
    return exists().where(rides.ride_id == ride_id, rides.status.in_(sorted(FINAL)))


def _past(store: str, cutoff: datetime, lifetimes: Lifetimes) -> ColumnElement[bool]:
    """The condition of a row of ``store`` past its lifetime, which ended at ``cutoff``."""
    if store == PROCESSED_EVENTS:
        return table_of(ProcessedEvent).c.processed_at < cutoff
    if store == IDEMPOTENCY_KEYS:
        return table_of(IdempotencyKey).c.created_at < cutoff
    if store == NOTIFICATIONS:
        return table_of(Notification).c.created_at < cutoff
    if store == OUTBOX_IDS:
        # the event stays in the log; only its id's claim goes, long after any retry
        return table_of(OutboxId).c.created_at < cutoff
    if store == RATE_LIMIT_HITS:
        # a row is its key's latest window: past once that window ended before the cutoff
        ended_by = int(cutoff.timestamp()) - lifetimes.rate_limit_window_s
        return table_of(RateLimitHit).c.window_start <= ended_by
    if store == OFFERS:
        # closed (answered, expired, withdrawn), or pending and expired long ago: no
        # driver can answer it (the api takes an answer only before it expires); and the
        # ride has ended, so its saga never reads the offer again (an answer given in
        # time is honoured however late the saga hears of it)
        o = table_of(Offer).c
        closed = (o.status != "pending") | (o.expires_at < cutoff)
        return (o.created_at < cutoff) & closed & _ride_ended(o.ride_id)
    if store == TRIP_METERS:
        # the trip ended, its fare was settled from the meter, and the ride has ended
        m, ledger = table_of(TripMeter).c, table_of(LedgerEntry).c
        settled = exists().where(ledger.ride_id == m.ride_id, ledger.kind.in_(SETTLED))
        return (m.ended_at.is_not(None) & (m.ended_at < cutoff) & settled
                & _ride_ended(m.ride_id))
    raise ValueError(f"unknown store {store!r}; known: {', '.join(STORES)}")


_TABLES: dict[str, type[SQLModel]] = {
    PROCESSED_EVENTS: ProcessedEvent, IDEMPOTENCY_KEYS: IdempotencyKey,
    RATE_LIMIT_HITS: RateLimitHit, OFFERS: Offer, NOTIFICATIONS: Notification,
    TRIP_METERS: TripMeter, OUTBOX_IDS: OutboxId,
}


def _table(store: str) -> Table:
    return table_of(_TABLES[store])


def stores_on(dialect: str) -> tuple[str, ...]:
    """The stores whose table this kind of database has (``outbox_ids``: PostgreSQL)."""
    return tuple(store for store in STORES if on_dialect(_table(store), dialect))


def count_statement(store: str, cutoff: datetime, lifetimes: Lifetimes) -> Select[int]:
    """How many rows of ``store`` are past their lifetime (what a dry run reports)."""
    return select(func.count()).select_from(_table(store)).where(
        _past(store, cutoff, lifetimes))


def batch_statement(store: str, cutoff: datetime, lifetimes: Lifetimes,
                    batch: int = BATCH) -> Delete:
    """Delete at most ``batch`` rows of ``store`` past their lifetime, chosen by key."""
    table = _table(store)
    past = _past(store, cutoff, lifetimes)
    key = list(table.primary_key.columns)
    chosen = select(*key).where(past).limit(batch)
    by_key = key[0].in_(chosen) if len(key) == 1 else tuple_(*key).in_(chosen)
    return delete(table).where(by_key).where(past)


def _delete_batch(session: Session, statement: Delete) -> int:
    return int(session.connection().execute(statement).rowcount)


def _count(session: Session, statement: Select[int]) -> int:
    return int(session.connection().execute(statement).scalar_one())


async def prune_store(db: Database, store: str, cutoff: datetime, lifetimes: Lifetimes, *,
                      dry_run: bool = False, batch: int = BATCH,
                      progress: Progress | None = None) -> int:
    """Delete the rows of ``store`` past their lifetime (``cutoff``), a batch a
    transaction, until a batch finds fewer than ``batch``; the number deleted. A dry run
    counts them and deletes nothing."""
    if dry_run:
        counting = count_statement(store, cutoff, lifetimes)
        return await db.read(lambda s: _count(s, counting))
    statement = batch_statement(store, cutoff, lifetimes, batch)
    removed = 0
    while True:
        n = await db.write(lambda s: _delete_batch(s, statement))
        removed += n
        if progress is not None:
            progress(store, n)
        if n < batch:
            return removed
        await asyncio.sleep(BATCH_PAUSE_S)


async def prune(db: Database, lifetimes: Lifetimes, *, dry_run: bool = False,
                now: datetime | None = None, batch: int = BATCH,
                progress: Progress | None = None) -> dict[str, int]:
    """Prune every store: the rows each removed (or, with ``dry_run``, would remove), by
    store. Each store's cutoff is ``now`` less its lifetime, fixed when the run starts.
    A store this kind of database does not have reports 0."""
    now = now or utcnow()
    removed = dict.fromkeys(STORES, 0)
    for store in stores_on(db.engine.dialect.name):
        cutoff = now - timedelta(seconds=lifetimes.keep_s[store])
        removed[store] = await prune_store(db, store, cutoff, lifetimes, dry_run=dry_run,
                                           batch=batch, progress=progress)
    return removed
