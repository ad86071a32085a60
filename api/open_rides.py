"""One open ride per rider: a rider asks for a ride only when every earlier one ended.

The check and the new ride share the write transaction. On SQLite, writers take the
database lock up front (``BEGIN IMMEDIATE``, ridehail.db), so two requests of one rider
run one after the other and the second finds the first. On PostgreSQL (READ COMMITTED),
the transaction first takes an advisory lock keyed by the rider, held until it ends, so
the second waits for the first to commit and then sees its ride.

Why not a partial unique index on ``rides(rider_id)`` where the ride is unfinished: the
table is a read model, rebuilt by replaying the streams (``ridehail projections
rebuild``), and publish order may differ from commit order (an event left to the relay
is published after later ones), so a replay can briefly see a rider's next ride before
the event that ended the previous one. The rule is about commands, so it is checked
where commands are taken.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import bindparam, text
from sqlmodel import Session, col, select

from store.tables import Ride

FINAL = ("completed", "cancelled", "failed")


def _lock_key(rider_id: str) -> int:
    digest = hashlib.sha256(f"open-ride:{rider_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def serialise_rider(session: Session, rider_id: str) -> None:
    """Make the rider's ride requests wait for each other until this transaction ends:
    call it first in the transaction that would add a ride, so that what it reads
    (Idempotency-Key, open ride) is what the previous request committed."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": _lock_key(rider_id)})
    # SQLite: the write transaction holds the database lock already (BEGIN IMMEDIATE)


_OPEN_RIDE_OF = (  # built once: every ride request asks
    select(Ride).where(col(Ride.rider_id) == bindparam("rider_id"))
    .where(col(Ride.status).not_in(FINAL))
    .order_by(col(Ride.created_at).desc()).limit(1)
)


def open_ride_of(session: Session, rider_id: str) -> Ride | None:
    """The rider's unfinished ride, if any (newest first)."""
    return session.exec(_OPEN_RIDE_OF, params={"rider_id": rider_id}).first()
