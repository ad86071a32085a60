"""``ridehail projections rebuild``: drop the read models and rebuild them from the
event log.

The rides read model and the projected columns of drivers (status, ride, position) are
cleared with the projectors' processed-event records; then every ride and driver event
of the event log (events.log: the outbox, which keeps every event committed) is applied
again in the order it was written, through the same functions the projectors use. The
log, not the streams, is read: the streams keep an event only for a while, and the log
keeps the whole history of every ride, in one order across rides and drivers (a driver's
going offline and a ride's release of that driver land in the order they happened).
Finally the projectors' durable consumers are recreated to start after the streams' last
message, so projectors that run on afterwards pick up only what is new.

Where the replay stops: the streams' ends are read first, the log's last position
second. An event on a stream by then was committed before, so it is in the log up to
that position and replayed; an event committed later is published later, after the
streams' ends, and the recreated durables bring it. One that is both (committed before,
published after) is applied once: the replay records it as processed.

Run it with the projectors stopped: a projector applying live events into a half-built
read model would race the rebuild (``running_projectors`` says which are pulling).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from sqlalchemy import delete, func, update
from sqlmodel import Session, col, select

from events import log
from events.consumer import durable_names, ensure_consumers
from events.consumers.projectors import Projectors
from events.envelope import CloudEvent, InvalidEvent
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

# Events applied a transaction.
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
    """Rebuild the read models from the event log as the module says; ``progress`` is
    told the events applied so far and how many there are in all."""
    specs = Projectors(db).specs()
    last = {s.stream: (await js.stream_info(s.stream)).state.last_seq for s in specs}
    up_to = await db.read(log.last_position)  # after the streams' ends: see the module
    for spec in specs:
        for durable, _ in durable_names(spec):
            try:
                await js.delete_consumer(spec.stream, durable)
            except NotFoundError:
                pass
    await db.write(_clear)

    total = await db.read(lambda s: log.count(s, up_to=up_to))
    counts = {"invalid": 0, log.RIDES: 0, log.DRIVERS: 0}

    def applied(done: int) -> None:
        if progress:
            progress(done, total)

    await _replay(db, up_to, counts, applied)

    for spec in specs:
        await ensure_consumers(js, spec, start_after=last[spec.stream])
    rides = await db.read(lambda s: s.exec(select(func.count()).select_from(Ride)).one())
    return RebuildResult(counts[log.RIDES], counts[log.DRIVERS], counts["invalid"], rides)


async def _replay(db: Database, up_to: int, counts: dict[str, int],
                  applied: Callable[[int], None]) -> None:
    """Apply every ride and driver event of the log up to position ``up_to``, in
    position order, ``BATCH`` to a transaction; ``counts`` each family's events and the
    invalid ones skipped; ``applied`` is told how many are applied after each batch and
    at the end."""
    def invalid(position: int, subject: str, error: InvalidEvent) -> None:
        counts["invalid"] += 1  # dead-lettered when first consumed

    done = 0
    async for batch in log.replay(db, up_to=up_to, on_invalid=invalid, batch=BATCH):
        events = [event for _, event in batch]
        await db.write(partial(_apply, batch=events))
        for event in events:
            counts[log.RIDES if event.type.startswith("ride.") else log.DRIVERS] += 1
        done += len(events)
        applied(done)
    applied(done)


def _apply(session: Session, batch: list[CloudEvent]) -> None:
    for event in batch:
        if event.type.startswith("ride."):
            project_ride_event(session, event, rebuilding=True)
        else:
            project_driver_event(session, event, rebuilding=True)
