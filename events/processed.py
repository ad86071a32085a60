"""Processed-event records: how a consumer makes a redelivered event a no-op."""

from __future__ import annotations

from sqlmodel import Session, select

from ridehail.tables import ProcessedEvent


def first_time(session: Session, consumer: str, event_id: str) -> bool:
    """Record that ``consumer`` applies ``event_id`` in this transaction; False if it
    already did. The unique constraint on (consumer, event_id) settles a race between
    two processes: the loser's transaction fails and is retried, and then sees the row."""
    seen = session.exec(
        select(ProcessedEvent.id)
        .where(ProcessedEvent.consumer == consumer)
        .where(ProcessedEvent.event_id == event_id)
    ).first()
    if seen is not None:
        return False
    session.add(ProcessedEvent(consumer=consumer, event_id=event_id))
    session.flush()
    return True
