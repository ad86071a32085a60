"""The event log: every event ridehail committed, read back from the outbox table.

The outbox keeps each event as it was committed, with its ``position`` (the table's
autoincrement key, so the order the events were written in), and nothing removes a row
(CONTRACT.md section 6). That makes it the record of every ride: a ride's history, the
replay that rebuilds the read models and the audit's check of every event read it from
here, so they work the same for a ride whose events have left the streams. The streams
carry events to the consumers; they are not where history is read from.

A ride's events are the rows of its id (``aggregate_id``, indexed) on its own subjects
(``rides.<ride_id>.<name>``: a rider or driver of the same id has other subjects). A
rebuild or an audit reads the whole log in position order, a batch at a time, each batch
from where the last ended, so however long the log, no more than a batch is held.

Each row is parsed as events.envelope parses a message; a body that is not a valid
event (one of a version this code no longer knows, say) is skipped and counted, as it
was when the streams were read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Select, Table, bindparam, func, or_
from sqlalchemy import select as core_select
from sqlmodel import Session

from events.envelope import POSITION_HEADER, CloudEvent, InvalidEvent, parse_event
from store.db import Database, table_of
from store.tables import OutboxEvent

# (position in the log, the event)
Logged = tuple[int, CloudEvent]
# Told of each row that is not a valid event: its position, its subject and why.
OnInvalid = Callable[[int, str, InvalidEvent], None]

RIDES = "rides"
DRIVERS = "drivers"
TERMINAL_TYPES = frozenset({"ride.completed", "ride.cancelled", "ride.failed"})
# Rows read a transaction by a replay.
BATCH = 500

_OUTBOX: Table = table_of(OutboxEvent)
_o = _OUTBOX.c

_RIDE = (
    core_select(_o.position, _o.subject, _o.body)
    .where(_o.aggregate_id == bindparam("ride_id"))
    .where(_o.subject.like(f"{RIDES}.%"))
    .where(_o.position > bindparam("after"))
    .order_by(_o.position)
)
_RIDE_ENDED = (
    core_select(_o.position)
    .where(_o.aggregate_id == bindparam("ride_id"))
    .where(_o.subject.in_(bindparam("subjects", expanding=True)))
    .limit(1)
)
_POSITION_OF = core_select(_o.position).where(_o.event_id == bindparam("event_id"))


def _of_families(query: Select[Any], families: Sequence[str]) -> Select[Any]:
    return query.where(or_(*(_o.subject.like(f"{family}.%") for family in families)))


def _parsed(rows: Iterable[Any], on_invalid: OnInvalid | None) -> list[Logged]:
    out: list[Logged] = []
    for position, subject, body in rows:
        try:
            out.append((position, parse_event(body.encode())))
        except InvalidEvent as e:
            if on_invalid is not None:
                on_invalid(position, subject, e)
    return out


def ride_log(session: Session, ride_id: str, after: int = 0,
             on_invalid: OnInvalid | None = None) -> list[Logged]:
    """The ride's events after position ``after``, in the order they were written."""
    rows = session.connection().execute(_RIDE, {"ride_id": ride_id, "after": after})
    return _parsed(rows, on_invalid)


async def read_ride(db: Database, ride_id: str, after: int = 0) -> list[Logged]:
    """``ride_log`` in a read transaction of its own."""
    return await db.read(lambda session: ride_log(session, ride_id, after))


def ended_in_log(session: Session, ride_id: str) -> bool:
    """The event that ends the ride is in the log."""
    subjects = [f"{RIDES}.{ride_id}.{t.removeprefix('ride.')}" for t in TERMINAL_TYPES]
    params = {"ride_id": ride_id, "subjects": subjects}
    return session.connection().execute(_RIDE_ENDED, params).first() is not None


def position_of(session: Session, event_id: str) -> int | None:
    """Where the event with this id is in the log (None: it is not)."""
    return session.connection().execute(_POSITION_OF, {"event_id": event_id}).scalar()


def last_position(session: Session) -> int:
    """The position of the newest event committed (0: none)."""
    return int(session.connection().execute(core_select(func.max(_o.position))).scalar() or 0)


def count(session: Session, families: Sequence[str] = (RIDES, DRIVERS),
          up_to: int | None = None) -> int:
    """How many events of these families the log holds (up to position ``up_to``)."""
    query = _of_families(core_select(func.count()).select_from(_OUTBOX), families)
    if up_to is not None:
        query = query.where(_o.position <= up_to)
    return int(session.connection().execute(query).scalar() or 0)


async def replay(db: Database, families: Sequence[str] = (RIDES, DRIVERS),
                 up_to: int | None = None, on_invalid: OnInvalid | None = None,
                 batch: int = BATCH) -> AsyncIterator[list[Logged]]:
    """Every event of these families (``rides``, ``drivers``) in position order, up to
    position ``up_to`` (all, if None), as batches of at most ``batch``: each read in a
    transaction of its own from the position the last one ended at."""
    query = _of_families(core_select(_o.position, _o.subject, _o.body), families)
    if up_to is not None:
        query = query.where(_o.position <= up_to)
    query = query.where(_o.position > bindparam("after")).order_by(_o.position).limit(batch)
    after = 0
    while True:
        def page(session: Session, after: int = after) -> list[Any]:
            return list(session.connection().execute(query, {"after": after}))

        rows = await db.read(page)
        if not rows:
            return
        after = rows[-1][0]
        logged = _parsed(rows, on_invalid)
        if logged:
            yield logged
        if len(rows) < batch:
            return


def header_position(headers: Mapping[str, str] | None) -> int | None:
    """The log position a message's publisher put on it (``POSITION_HEADER``), or None
    (a message published before positions were, or by hand)."""
    value = (headers or {}).get(POSITION_HEADER)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
