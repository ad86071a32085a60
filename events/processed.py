"""Processed-event records: how a consumer makes a redelivered event a no-op."""

from __future__ import annotations

from sqlalchemy import Table, bindparam, select
from sqlmodel import Session

from store.db import insert_unless_present, table_of
from store.tables import ProcessedEvent, utcnow

_PROCESSED: Table = table_of(ProcessedEvent)


def first_time(session: Session, consumer: str, event_id: str) -> bool:
    """Record that ``consumer`` applies ``event_id`` in this transaction; False if it
    already did. The unique constraint on (consumer, event_id) settles a race between
    two processes: the loser inserts nothing, and applies nothing."""
    record = insert_unless_present(session, _PROCESSED, ["consumer", "event_id"], ("id",))
    params = {"consumer": consumer, "event_id": event_id, "processed_at": utcnow()}
    return session.connection().execute(record, params).first() is not None


def processed(session: Session, consumer: str, event_id: str) -> bool:
    """Whether ``consumer`` has applied ``event_id`` (a read; ``first_time`` decides)."""
    params = {"consumer": consumer, "event_id": event_id}
    return session.connection().execute(_PROCESSED_ONE, params).first() is not None


_PROCESSED_ONE = (
    select(_PROCESSED.c.id)
    .where(_PROCESSED.c.consumer == bindparam("consumer"))
    .where(_PROCESSED.c.event_id == bindparam("event_id"))
)
