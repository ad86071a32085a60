"""Rows in and past their lifetime in every table housekeeping prunes, and the money
records and event log it never touches, for the tests of pruning (on SQLite and
PostgreSQL, and through ``ridehail prune``). ``outbox_ids`` is PostgreSQL's alone: what
a run removes (``past``) and keeps (``kept``) depend on the kind of database."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, SQLModel, select

from store.tables import (
    IdempotencyKey,
    LedgerEntry,
    Notification,
    Offer,
    OutboxEvent,
    OutboxId,
    ProcessedEvent,
    RateLimitHit,
    Ride,
    TripMeter,
)
from tests.support.rides import DROPOFF, PICKUP

DAY = timedelta(days=1)
WINDOW_S = 60
# the defaults of CONTRACT.md section 1, set here so the environment cannot change them
KEEP = {"processed_keep_s": 7 * 86400, "idempotency_keep_s": 2 * 86400,
        "rate_limit_keep_s": 3600, "offer_keep_s": 30 * 86400,
        "notification_keep_s": 30 * 86400, "trip_meter_keep_s": 30 * 86400,
        "outbox_ids_keep_s": 7 * 86400, "rate_limit_window_s": WINDOW_S}
# what a run removes of the rows ``seed`` writes, by store, on PostgreSQL (``past``)
PAST = {"processed_events": 2, "idempotency_keys": 1, "rate_limit_hits": 1, "offers": 2,
        "notifications": 1, "trip_meters": 1, "outbox_ids": 1}
# the rows that stay, by table: their keys
KEPT = {
    ProcessedEvent: {("ride-projector", "recent")},
    IdempotencyKey: {("r1", "recent")},
    RateLimitHit: {("recent",), ("current",)},
    Offer: {("done:young",), ("open:old",), ("done:open",)},
    Notification: {("recent",)},
    TripMeter: {("m-unsettled",), ("m-open",), ("m-young",), ("m-running",)},
    LedgerEntry: {("old-capture",), ("m-done:settle",), ("m-open:settle",),
                  ("m-young:settle",)},
    OutboxEvent: {("old-event",)},
    OutboxId: {("recent-event",)},
}


def past(dialect: str) -> dict[str, int]:
    """What a run removes of the rows ``seed`` writes on this kind of database."""
    return PAST if dialect == "postgresql" else {**PAST, "outbox_ids": 0}


def kept(dialect: str) -> dict[type[SQLModel], set[tuple[Any, ...]]]:
    """The rows that stay on this kind of database (SQLite has no ``outbox_ids``)."""
    return KEPT if dialect == "postgresql" else {k: v for k, v in KEPT.items()
                                                 if k is not OutboxId}


def ride_row(ride_id: str, status: str) -> Ride:
    return Ride(ride_id=ride_id, rider_id="r1", status=status, pickup_lat=PICKUP["lat"],
                pickup_lng=PICKUP["lng"], dropoff_lat=DROPOFF["lat"],
                dropoff_lng=DROPOFF["lng"])


def offer_row(offer_id: str, ride_id: str, status: str, created: datetime,
              expires: datetime) -> Offer:
    return Offer(offer_id=offer_id, ride_id=ride_id, driver_id="d1", status=status,
                 pickup_lat=PICKUP["lat"], pickup_lng=PICKUP["lng"],
                 dropoff_lat=DROPOFF["lat"], dropoff_lng=DROPOFF["lng"], fare_cents=1200,
                 expires_at=expires, created_at=created)


def capture(ride_id: str, at: datetime, key: str | None = None) -> LedgerEntry:
    return LedgerEntry(ride_id=ride_id, kind="capture", amount_cents=1200,
                       idempotency_key=key or f"{ride_id}:settle", gateway_ref="x",
                       created_at=at)


def meters(now: datetime) -> list[SQLModel]:
    """Trip meters: only the one of a settled trip, ended long ago, of a ride that ended
    goes."""
    old, young = now - 31 * DAY, now - 29 * DAY
    rows: list[SQLModel] = []
    for ride_id, status, ended, settled in (("m-done", "completed", old, True),
                                            ("m-unsettled", "cancelled", old, False),
                                            ("m-open", "in_progress", old, True),
                                            ("m-young", "completed", young, True),
                                            ("m-running", "in_progress", None, False)):
        rows += [ride_row(ride_id, status),
                 TripMeter(ride_id=ride_id, driver_id="d1", points=3, started_at=old,
                           ended_at=ended)]
        if settled:
            rows.append(capture(ride_id, old))
    return rows


def offers(now: datetime) -> list[SQLModel]:
    """Offers: closed ones (or pending ones long expired) of ended rides, past 30 days."""
    old, young = now - 31 * DAY, now - 29 * DAY
    return [
        ride_row("done", "completed"), ride_row("open", "matching"),
        offer_row("done:accepted", "done", "accepted", old, old + timedelta(seconds=15)),
        offer_row("done:expired", "done", "pending", old, old + timedelta(seconds=15)),
        offer_row("done:young", "done", "declined", young, young + timedelta(seconds=15)),
        offer_row("open:old", "open", "expired", old, old + timedelta(seconds=15)),
        # pending and not yet expired: a driver may still answer it
        offer_row("done:open", "done", "pending", old, now + timedelta(hours=1)),
    ]


def seed(session: Session, now: datetime) -> None:
    window = int(now.timestamp()) // WINDOW_S * WINDOW_S
    session.add_all([
        ProcessedEvent(consumer="ride-projector", event_id="old-1", processed_at=now - 8 * DAY),
        ProcessedEvent(consumer="notifier", event_id="old-2", processed_at=now - 8 * DAY),
        ProcessedEvent(consumer="ride-projector", event_id="recent", processed_at=now - 6 * DAY),
        IdempotencyKey(rider_id="r1", key="old", request_hash="h", ride_id="x",
                       created_at=now - 3 * DAY),
        IdempotencyKey(rider_id="r1", key="recent", request_hash="h", ride_id="x",
                       created_at=now - DAY),
        RateLimitHit(key="gone", window_start=window - 7200, hits=3),
        RateLimitHit(key="recent", window_start=window - 1800, hits=3),  # ended 29 min ago
        RateLimitHit(key="current", window_start=window, hits=3),
        Notification(notification_id="old", user_id="r1", kind="k", message="m",
                     created_at=now - 31 * DAY),
        Notification(notification_id="recent", user_id="r1", kind="k", message="m",
                     created_at=now - DAY),
        # never pruned, however old: money records and the event log
        capture("ancient", now - 400 * DAY, key="old-capture"),
        OutboxEvent(event_id="old-event", aggregate_id="ancient", subject="rides.ancient.x",
                    body="{}", created_at=now - 400 * DAY, published_at=now - 400 * DAY),
        *offers(now), *meters(now),
    ])
    if _dialect(session) == "postgresql":  # the claims of event ids: a week
        session.add_all([OutboxId(event_id="old-event", position=1, created_at=now - 8 * DAY),
                         OutboxId(event_id="recent-event", position=2,
                                  created_at=now - 6 * DAY)])


def _dialect(session: Session) -> str:
    return session.connection().dialect.name


def keys(session: Session) -> dict[type[SQLModel], set[tuple[Any, ...]]]:
    """The rows of each table, by the key KEPT names them by."""
    ids = ({OutboxId: {(r.event_id,) for r in session.exec(select(OutboxId))}}
           if _dialect(session) == "postgresql" else {})
    return {
        ProcessedEvent: {(r.consumer, r.event_id) for r in session.exec(select(ProcessedEvent))},
        IdempotencyKey: {(r.rider_id, r.key) for r in session.exec(select(IdempotencyKey))},
        RateLimitHit: {(r.key,) for r in session.exec(select(RateLimitHit))},
        Offer: {(r.offer_id,) for r in session.exec(select(Offer))},
        Notification: {(r.notification_id,) for r in session.exec(select(Notification))},
        TripMeter: {(r.ride_id,) for r in session.exec(select(TripMeter))},
        LedgerEntry: {(r.idempotency_key,) for r in session.exec(select(LedgerEntry))},
        OutboxEvent: {(r.event_id,) for r in session.exec(select(OutboxEvent))},
        **ids,
    }
