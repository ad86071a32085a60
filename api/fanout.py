"""Live ride events for every event stream of an API process, from one subscription.

A ride's event stream (``GET /v1/rides/{id}/events`` as SSE) used to open a JetStream
consumer of its own, so a script opening streams made consumers without end. Now each
API process keeps one ephemeral push consumer on ``RIDES`` (all rides, new messages
only, nothing acknowledged), open while at least one stream listens, and hands each
message to the streams of its ride in memory, with the event's position in the event log
(the ``Ridehail-Position`` header the outbox puts on it). A stream reads the ride's
history from the database (events.log) and resumes from the fan-out after it; anything
the fan-out could not hand over (a stream too slow, NATS reconnecting) is read back from
the database by position, so nothing is lost, only late.

Open streams are also capped per token subject (``RIDEHAIL_SSE_STREAMS_PER_SUBJECT``,
per process): a rider's phone and a browser tab or two need a few, a script asking for
hundreds gets 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from api.problems import Problem
from events.envelope import CloudEvent, InvalidEvent, parse_event
from events.log import header_position

log = logging.getLogger(__name__)

STREAM = "RIDES"
ALL_RIDES = "rides.>"
LIVE_QUEUE_SIZE = 256
STREAM_SLOT_RETRY_S = 10
# The server deletes a feed's consumer this long after its subscriber went away without
# deleting it (the process died); a live feed is never inactive, it has a subscriber.
INACTIVE_THRESHOLD_S = 30.0

L = TypeVar("L")
# (position in the event log, the event); the position is None on a message published
# without it (by an older version, or a dead letter redriven)
Live = tuple[int | None, CloudEvent]


class FeedIdle(TimeoutError):
    """No event arrived within the wait."""


@dataclass(eq=False)
class LiveRide:
    """The live events of one ride for one stream, as (position, event)."""

    queue: asyncio.Queue[Live] = field(default_factory=lambda: asyncio.Queue(LIVE_QUEUE_SIZE))
    # set when an event could not be queued: the stream reads the database again
    missed: bool = False

    async def next(self, timeout: float) -> Live:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            raise FeedIdle() from None


class SharedFeed(Generic[L]):
    """One ephemeral push consumer on ``RIDES`` (``filter_subject``, new messages only,
    nothing acknowledged) for all the listeners of a process: created for the first
    listener and deleted with the last; each message goes, in memory, to the listeners of
    its key (``key_of``)."""

    def __init__(self, nc: NATS, js: JetStreamContext, filter_subject: str) -> None:
        self.nc = nc
        self.js = js
        self.filter_subject = filter_subject
        self._listeners: dict[str, set[L]] = {}
        self._lock = asyncio.Lock()
        self._sub: Subscription | None = None
        self._consumer: str | None = None

    def key_of(self, event: CloudEvent) -> str | None:
        raise NotImplementedError

    def hand_over(self, listener: L, position: int | None, event: CloudEvent) -> None:
        raise NotImplementedError

    async def _deliver(self, msg: Msg) -> None:
        try:
            event = parse_event(msg.data)
        except InvalidEvent:
            return
        key = self.key_of(event)
        listeners = self._listeners.get(key) if key is not None else None
        if not listeners:
            return
        position = header_position(msg.headers)
        for listener in list(listeners):
            self.hand_over(listener, position, event)

    async def _open(self) -> None:
        inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(inbox, cb=self._deliver)
        info = await self.js.add_consumer(STREAM, ConsumerConfig(
            deliver_subject=inbox, filter_subject=self.filter_subject,
            deliver_policy=DeliverPolicy.NEW, ack_policy=AckPolicy.NONE,
            inactive_threshold=INACTIVE_THRESHOLD_S, mem_storage=True, num_replicas=1))
        self._consumer = info.name

    async def _close(self) -> None:
        sub, consumer = self._sub, self._consumer
        self._sub = self._consumer = None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if consumer is not None:
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(STREAM, consumer)

    @contextlib.asynccontextmanager
    async def listening(self, key: str, listener: L) -> AsyncIterator[L]:
        """``listener`` receives what is published for ``key`` from now on."""
        async with self._lock:
            if self._sub is None:
                try:
                    await self._open()
                except BaseException:
                    await self._close()
                    raise
            self._listeners.setdefault(key, set()).add(listener)
        try:
            yield listener
        finally:
            with anyio.CancelScope(shield=True):  # runs as the client disconnects
                async with self._lock:
                    listeners = self._listeners.get(key, set())
                    listeners.discard(listener)
                    if not listeners:
                        self._listeners.pop(key, None)
                    if not self._listeners:
                        await self._close()

    async def aclose(self) -> None:
        async with self._lock:
            self._listeners.clear()
            await self._close()


class RideFanout(SharedFeed[LiveRide]):
    """One JetStream consumer for all of a process's ride event streams."""

    def __init__(self, nc: NATS, js: JetStreamContext) -> None:
        super().__init__(nc, js, ALL_RIDES)

    def key_of(self, event: CloudEvent) -> str | None:
        return event.subject

    def hand_over(self, listener: LiveRide, position: int | None, event: CloudEvent) -> None:
        try:
            listener.queue.put_nowait((position, event))
        except asyncio.QueueFull:
            listener.missed = True

    def listen(self, ride_id: str) -> contextlib.AbstractAsyncContextManager[LiveRide]:
        """The ride's events published from now on."""
        return self.listening(ride_id, LiveRide())


class StreamSlots:
    """How many live streams each subject has open in this process, capped."""

    def __init__(self, per_subject: int) -> None:
        self.per_subject = per_subject
        self._open: dict[str, int] = {}

    def take(self, subject: str) -> None:
        """Take a slot for ``subject`` or raise a 429 problem."""
        if self._open.get(subject, 0) >= self.per_subject:
            raise Problem(429, f"You have {self.per_subject} live streams open already; "
                               "close one first",
                          headers={"Retry-After": str(STREAM_SLOT_RETRY_S)})
        self._open[subject] = self._open.get(subject, 0) + 1

    def give_back(self, subject: str) -> None:
        left = self._open.get(subject, 0) - 1
        if left > 0:
            self._open[subject] = left
        else:
            self._open.pop(subject, None)
