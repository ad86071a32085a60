"""``ridehail projections rebuild``: drop the read models and rebuild them from the
streams.

The rides read model and the projected columns of drivers (status, ride, position) are
cleared with the projectors' processed-event records; then every event on RIDES and
DRIVERS is applied again from the start, merged in publication-time order (a driver's
going offline and a ride's release of that driver must land in the order they
happened). Finally the projectors' durable consumers are recreated to start after the
last event replayed, so projectors that run on afterwards pick up only what is new.

Run it with the projectors stopped: a projector applying live events into a half-built
read model would race the rebuild (``running_projectors`` says which are pulling).
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from sqlalchemy import delete, func, update
from sqlmodel import Session, col, select

from events.consumer import durable_names, ensure_consumers
from events.consumers.projectors import Projectors
from events.envelope import CloudEvent, InvalidEvent, parse_event
from events.migrate_streams import active_durables
from events.projection import (
    DRIVER_PROJECTOR,
    RIDE_PROJECTOR,
    project_driver_event,
    project_ride_event,
)
from events.topology import DRIVER_PROJECTOR as DRIVER_PROJECTOR_GROUP
from events.topology import RIDE_PROJECTOR as RIDE_PROJECTOR_GROUP
from store.db import Database
from store.tables import Driver, ProcessedEvent, Ride

# An event read for the merge: ordered by (publication time, stream, stream sequence).
SortKey = tuple[datetime, str, int]
Tagged = tuple[SortKey, CloudEvent]

BATCH = 200


async def running_projectors(js: JetStreamContext) -> list[str]:
    """The projectors' durables a process is pulling from now ("RIDES > ride-projector-p3")."""
    return await active_durables(js, (RIDE_PROJECTOR_GROUP, DRIVER_PROJECTOR_GROUP))


@dataclass
class RebuildResult:
    rides_events: int
    driver_events: int
    skipped_invalid: int
    rides: int


async def _read_stream(js: JetStreamContext, stream: str, prefix: str, last_seq: int,
                       counts: dict[str, int]) -> AsyncIterator[tuple[int, CloudEvent]]:
    """Every valid event of ``stream`` up to ``last_seq``, in stream order."""
    if last_seq == 0:
        return
    sub = await js.pull_subscribe(
        f"{prefix}.>", stream=stream,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE,
                              inactive_threshold=60, mem_storage=True),
    )
    info = await sub.consumer_info()
    try:
        while True:
            try:
                msgs = await sub.fetch(512, timeout=5)
            except NatsTimeoutError:
                return
            for m in msgs:
                seq = m.metadata.sequence.stream
                if seq > last_seq:
                    return
                try:
                    yield seq, parse_event(m.data)
                except InvalidEvent:
                    counts["invalid"] += 1  # dead-lettered when first consumed
                if seq == last_seq:
                    return
    finally:
        await sub.unsubscribe()
        await js.delete_consumer(stream, info.name)


def _clear(session: Session) -> None:
    session.exec(delete(Ride))
    session.exec(update(Driver).values(
        status="offline", ride_id=None, lat=None, lng=None, h3_cell=None))
    session.exec(delete(ProcessedEvent).where(
        col(ProcessedEvent.consumer).in_([RIDE_PROJECTOR, DRIVER_PROJECTOR])))


async def rebuild_projections(
    db: Database, js: JetStreamContext,
    progress: Callable[[int, int], None] | None = None,
) -> RebuildResult:
    """Rebuild the read models from RIDES and DRIVERS as the module says; ``progress``
    is told the events applied so far and how many there are in all."""
    specs = Projectors(db).specs()
    last = {s.stream: (await js.stream_info(s.stream)).state.last_seq for s in specs}
    for spec in specs:
        for durable, _ in durable_names(spec):
            try:
                await js.delete_consumer(spec.stream, durable)
            except NotFoundError:
                pass
    await db.write(_clear)

    total = 0
    for stream in last:
        total += (await js.stream_info(stream)).state.messages
    counts = {"invalid": 0, "RIDES": 0, "DRIVERS": 0}

    def applied(done: int) -> None:
        if progress:
            progress(done, total)

    await _replay(db, js, last, counts, applied)

    for spec in specs:
        await ensure_consumers(js, spec, start_after=last[spec.stream])
    rides = await db.read(lambda s: s.exec(select(func.count()).select_from(Ride)).one())
    return RebuildResult(counts["RIDES"], counts["DRIVERS"], counts["invalid"], rides)


async def _replay(db: Database, js: JetStreamContext, last: dict[str, int],
                  counts: dict[str, int], applied: Callable[[int], None]) -> None:
    """Apply every event of RIDES and DRIVERS up to ``last``, merged in publication-time
    order, ``BATCH`` to a transaction; ``counts`` each stream's events and the invalid
    ones skipped; ``applied`` is told how many are applied after each batch and at the
    end."""
    async def tagged(stream: str, prefix: str) -> AsyncIterator[Tagged]:
        async for seq, event in _read_stream(js, stream, prefix, last[stream], counts):
            yield (event.time, stream, seq), event

    merged = _merge(tagged("DRIVERS", "drivers"), tagged("RIDES", "rides"))
    batch: list[tuple[str, CloudEvent]] = []
    done = 0
    async for (_, stream, _seq), event in merged:
        batch.append((stream, event))
        counts[stream] += 1
        if len(batch) >= BATCH:
            await db.write(partial(_apply, batch=batch))
            done += len(batch)
            batch = []
            applied(done)
    if batch:
        await db.write(partial(_apply, batch=batch))
        done += len(batch)
    applied(done)


def _apply(session: Session, batch: list[tuple[str, CloudEvent]]) -> None:
    for stream, event in batch:
        if stream == "RIDES":
            project_ride_event(session, event, rebuilding=True)
        else:
            project_driver_event(session, event, rebuilding=True)


async def _merge(*sources: AsyncIterator[Tagged]) -> AsyncIterator[Tagged]:
    """Merge already-ordered async streams of (key, item) by key."""
    iters = list(sources)
    heap: list[tuple[SortKey, int, CloudEvent]] = []
    for i, it in enumerate(iters):
        first = await anext(it, None)
        if first is not None:
            heapq.heappush(heap, (first[0], i, first[1]))
    while heap:
        key, i, item = heapq.heappop(heap)
        yield key, item
        nxt = await anext(iters[i], None)
        if nxt is not None:
            heapq.heappush(heap, (nxt[0], i, nxt[1]))
