"""The transactional outbox: events commit with the state change, then go to JetStream.

``Outbox.write`` runs a unit of work that returns the events it caused; the events are
stored in the same transaction and published right after commit. Anything whose publish
failed stays unpublished in the table, and the relay (``Outbox.relay``) publishes it later
in the order it was written. Publishing sets ``Nats-Msg-Id`` to the event id, so a
message published twice (say, the process died between the PubAck and marking the row)
is dropped by JetStream's duplicate window. Each message also carries the row's position
in the event log (``Ridehail-Position``), which a ride's live stream gives its clients.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from sqlalchemy import Table, bindparam, or_, update
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from events import tracecontext
from events.envelope import APPLIED_HEADER, POSITION_HEADER, CloudEvent
from events.projection import project_inline
from events.ridemetrics import RideMetrics
from store.db import Database, insert_unless_present, table_of
from store.partitions import STAGE_NEW_EVENTS
from store.tables import OutboxEvent, utcnow

log = logging.getLogger(__name__)
_OUTBOX: Table = table_of(OutboxEvent)
T = TypeVar("T")

PUBLISH_TIMEOUT_S = 5.0
# How long a writer waits, after its commit, for its events' PubAcks before it answers and
# leaves the rest to the relay: a stalled or slow broker never holds up a write longer.
PUBLISH_AFTER_COMMIT_S = 0.5
# After a publish gave up that way, writers skip publishing for this long (the broker is
# stalled: waiting again would only add the same delay); the relay publishes meanwhile.
STALL_BACKOFF_S = 2.0
# Published events are marked in batches, this long after the first PubAck of a batch:
# one write transaction for many events instead of one each.
MARK_DELAY_S = 0.2


async def publish(js: JetStreamContext, subject: str, body: bytes, event_id: str,
                  applied: bool = False, timeout: float = PUBLISH_TIMEOUT_S,
                  position: int | None = None) -> None:
    """Publish one event and wait for JetStream's PubAck (raises if it is not stored);
    with tracing on, in a publish span whose context the headers carry. ``position`` is
    the event's position in the event log, put on the message for its live readers."""
    headers = {"Nats-Msg-Id": event_id}
    if position is not None:
        headers[POSITION_HEADER] = str(position)
    if applied:
        headers[APPLIED_HEADER] = "1"
    if not tracecontext.tracing_on():
        await js.publish(subject, body, timeout=timeout, headers=headers)
        return
    with tracecontext.publish_span(subject, body, event_id) as trace_headers:
        await js.publish(subject, body, timeout=timeout, headers={**headers, **trace_headers})


@dataclass(frozen=True, slots=True)
class Staged:
    """An outbox row just added: what publishing and marking it need (a plain record;
    building the table's model would validate every field again)."""

    position: int
    event_id: str
    aggregate_id: str
    subject: str
    body: str
    created_at: datetime


def stage(session: Session, events: Sequence[CloudEvent]) -> list[Staged]:
    """Add events to the outbox within the caller's transaction; returns the rows added,
    with their positions. Events whose id is already there (a retried activity) are not
    added twice: on SQLite the outbox's unique ``event_id`` skips them; on PostgreSQL,
    whose outbox is partitioned by month, the id is claimed in ``outbox_ids`` by the same
    statement (store.partitions)."""
    if not events:
        return []
    now = utcnow()
    first: dict[str, CloudEvent] = {}
    for e in events:  # an id given twice is stored once, as it first came
        first.setdefault(e.id, e)
    rows = [(e.id, e.subject, e.nats_subject, e.to_json().decode()) for e in first.values()]
    session.flush()  # the caller's own changes go first
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        params: dict[str, object] = {name: [row[i] for row in rows] for i, name in
                                     enumerate(("event_ids", "aggregate_ids", "subjects",
                                                "bodies"))}
        result = conn.execute(STAGE_NEW_EVENTS, {**params, "created_at": now})
    else:
        insert = insert_unless_present(session, _OUTBOX, ["event_id"],
                                       ("event_id", "position"))
        result = conn.execute(insert, [
            {"event_id": event_id, "aggregate_id": aggregate_id, "subject": subject,
             "body": body, "created_at": now, "attempts": 0}
            for event_id, aggregate_id, subject, body in rows])
    added: dict[str, int] = {event_id: position for event_id, position in result}
    return [Staged(added[event_id], event_id, aggregate_id, subject, body, now)
            for event_id, aggregate_id, subject, body in rows if event_id in added]


_o = _OUTBOX.c
# An earlier event of the same aggregates that is unpublished and failed, or overdue.
_BEHIND = (
    core_select(_o.position)
    .where(_o.aggregate_id.in_(bindparam("aggregates", expanding=True)))
    .where(_o.published_at.is_(None))
    .where(_o.position < bindparam("first"))
    .where(or_(_o.attempts > 0, _o.created_at < bindparam("stale")))
    .limit(1)
)


def _behind_unpublished(session: Session, rows: list[Staged]) -> bool:
    """True when an earlier event of the same ride or driver failed to publish (or has
    been waiting longer than a publish can take): then these must wait for the relay,
    which publishes in order. An earlier event that is merely being published right now,
    or whose PubAck is in and is about to be marked, does not hold them back."""
    if not rows:
        return False
    params = {
        "aggregates": list({r.aggregate_id for r in rows}),
        "first": min(r.position for r in rows),
        "stale": utcnow() - timedelta(seconds=PUBLISH_TIMEOUT_S + MARK_DELAY_S + 1),
    }
    return session.connection().execute(_BEHIND, params).first() is not None


class Outbox:
    def __init__(self, db: Database, js: JetStreamContext, nc: NATS | None = None) -> None:
        self.db = db
        self.js = js
        self.nc = nc
        self._to_mark: list[tuple[str, datetime]] = []  # event id, when written
        self._marking: asyncio.Task[None] | None = None
        self._stalled_until = 0.0  # loop time; see STALL_BACKOFF_S
        self.ride_traces = tracecontext.RideTraces()
        self.ride_metrics = RideMetrics()

    @property
    def connected(self) -> bool:
        return self.nc is None or self.nc.is_connected

    def _publishing_after_commit(self) -> bool:
        """Whether a writer should publish right after its commit: not while NATS is
        away, nor for a moment after a publish found it stalled."""
        return self.connected and asyncio.get_running_loop().time() >= self._stalled_until

    async def write(self, work: Callable[[Session], tuple[T, Sequence[CloudEvent]]]) -> T:
        """Run ``work`` in a write transaction, store the events it returns with it (and
        apply them to the read models: events.projection), and publish them once
        committed. The result is returned even if NATS is down: the events are safe in
        the outbox and the relay will publish them."""

        def run(session: Session
                ) -> tuple[T, list[Staged], set[str], bool, list[Callable[[], None]]]:
            result, events = work(session)
            if tracecontext.tracing_on():
                tracecontext.stamp(session, events, self.ride_traces)
            rows = stage(session, events)
            staged = {r.event_id for r in rows}
            new = [e for e in events if e.id in staged]
            applied = project_inline(session, new)
            measured = self.ride_metrics.measure(session, new)
            return result, rows, applied, _behind_unpublished(session, rows), measured

        result, rows, applied, deferred, measured = await self.db.write(run)
        for observe in measured:  # committed: count it
            observe()
        # While NATS is away, don't make the caller wait for a publish timeout: the rows
        # are committed and the relay publishes them once the connection is back.
        if not rows or deferred:
            return result
        published = 0
        if self._publishing_after_commit():
            published = await self._publish_rows(rows, applied, PUBLISH_AFTER_COMMIT_S)
            if published < len(rows):
                self._stalled_until = asyncio.get_running_loop().time() + STALL_BACKOFF_S
        self._mark_soon(rows[:published])
        if published < len(rows):
            # counted as a failed attempt, so later events of the same ride wait for the
            # relay instead of overtaking this one
            failed = rows[published]
            await self.db.write(
                lambda s: self._count_attempt(s, failed.event_id, failed.created_at))
        return result

    async def _publish_rows(self, rows: Sequence[Staged | OutboxEvent],
                            applied: Collection[str] = (),
                            within_s: float | None = None) -> int:
        """Publish rows in order; stop at the first failure, or once ``within_s`` has
        passed (the rest keep their order). Returns how many were published. A publish
        given up on may still be stored: the relay's copy then has the same
        ``Nats-Msg-Id``, and JetStream drops it."""
        done = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (within_s if within_s is not None else float("inf"))
        try:
            for row in rows:
                timeout = min(PUBLISH_TIMEOUT_S, deadline - loop.time())
                if timeout <= 0:
                    raise TimeoutError(f"no PubAck within {within_s}s")
                await publish(self.js, row.subject, row.body.encode(), row.event_id,
                              row.event_id in applied, timeout, row.position)
                done += 1
        except Exception as e:  # noqa: BLE001 — any failure leaves the rest to the relay
            log.warning("outbox: publish failed, left for the relay: %s", e)
        return done

    def _mark_soon(self, rows: Sequence[Staged]) -> None:
        if not rows:
            return
        self._to_mark.extend((r.event_id, r.created_at) for r in rows)
        if self._marking is None or self._marking.done():
            self._marking = asyncio.create_task(self._mark_batches())

    async def _mark_batches(self) -> None:
        await asyncio.sleep(MARK_DELAY_S)
        while self._to_mark:
            batch, self._to_mark = self._to_mark, []
            mark = functools.partial(self._mark_published, event_ids=[i for i, _ in batch],
                                     since=min(written for _, written in batch))
            try:
                await self.db.write(mark)
            except Exception:
                # and JetStream drops the copies (same Nats-Msg-Id)
                log.warning("outbox: could not mark %d events published", len(batch),
                            exc_info=True)

    async def flush(self) -> None:
        """Mark what has been published (call before the process stops)."""
        if self._marking is not None:
            await asyncio.gather(self._marking, return_exceptions=True)

    @staticmethod
    def _mark_published(session: Session, event_ids: list[str],
                        since: datetime | None = None) -> None:
        """Mark events published. ``since``, when the oldest of them was written, keeps
        the update to the months they were written in (on PostgreSQL the outbox is
        partitioned by month: store.partitions) instead of every month's index."""
        q = update(OutboxEvent).where(col(OutboxEvent.event_id).in_(event_ids))
        if since is not None:
            q = q.where(col(OutboxEvent.created_at) >= since)
        session.exec(q.values(published_at=utcnow()))

    async def relay_once(self, min_age_s: float = 2.0, batch: int = 500) -> int:
        """Publish unpublished events older than ``min_age_s`` (younger ones are still
        being published by the process that wrote them), oldest first.

        Several relays may run at once and pick the same rows: no row lock is taken (a
        plain READ COMMITTED read on PostgreSQL). Each publishes with the event id as
        ``Nats-Msg-Id``, so JetStream stores one copy, and marking a row published twice
        is harmless; what a relay must never do, publish a ride's events out of order,
        it avoids by publishing strictly by position and stopping at a failure."""
        cutoff = utcnow() - timedelta(seconds=min_age_s)

        def pending(session: Session) -> list[OutboxEvent]:
            q = (
                select(OutboxEvent)
                .where(col(OutboxEvent.published_at).is_(None))
                .where(col(OutboxEvent.created_at) <= cutoff)
                .order_by(col(OutboxEvent.position))
                .limit(batch)
            )
            return list(session.exec(q))

        if not self.connected:
            return 0
        rows = await self.db.read(pending)
        if not rows:
            return 0
        published = await self._publish_rows(rows)
        if published:
            ids = [r.event_id for r in rows[:published]]
            since = min(r.created_at for r in rows[:published])
            await self.db.write(lambda s: self._mark_published(s, ids, since))
        if published < len(rows):
            failed = rows[published]
            await self.db.write(
                lambda s: self._count_attempt(s, failed.event_id, failed.created_at))
        return published

    async def oldest_unpublished_s(self) -> float:
        """How long the oldest event not yet published has waited (0: none waits)."""

        def oldest(session: Session) -> float:
            first = session.exec(
                select(OutboxEvent.created_at)
                .where(col(OutboxEvent.published_at).is_(None))
                .order_by(col(OutboxEvent.position)).limit(1)).first()
            return 0.0 if first is None else max(0.0, (utcnow() - first).total_seconds())

        return await self.db.read(oldest)

    @staticmethod
    def _count_attempt(session: Session, event_id: str, created_at: datetime) -> None:
        session.exec(
            update(OutboxEvent)
            .where(col(OutboxEvent.event_id) == event_id)
            .where(col(OutboxEvent.created_at) >= created_at)  # its month alone
            .values(attempts=OutboxEvent.attempts + 1)
        )

    async def relay(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        """The relay loop (``ridehail relay``, and a task inside ``ridehail dev``)."""
        while not stop.is_set():
            try:
                n = await self.relay_once()
                if n:
                    log.info("relay: published %d outbox event(s)", n)
            except Exception:
                log.exception("relay: pass failed; retrying")
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass
