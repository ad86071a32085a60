"""Live ride events for every event stream of an API process, from one subscription.

A ride's event stream (``GET /v1/rides/{id}/events`` as SSE) used to open a JetStream
consumer of its own, so a script opening streams made consumers without end. Now each
API process keeps one ephemeral push consumer on ``RIDES`` (all rides, new messages
only, nothing acknowledged), open while at least one stream listens, and hands each
message to the streams of its ride in memory. A stream reads the ride's history from the
stream itself (events.history, a consumer that lives for the read) and resumes from the
fan-out after it; anything the fan-out could not hand over (a stream too slow, NATS
reconnecting) is read back from the stream by sequence, so nothing is lost, only late.

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

import anyio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from api.problems import Problem
from events.envelope import CloudEvent, InvalidEvent, parse_event
from events.history import INACTIVE_THRESHOLD_S, FeedIdle

log = logging.getLogger(__name__)

STREAM = "RIDES"
ALL_RIDES = "rides.>"
LIVE_QUEUE_SIZE = 256
STREAM_SLOT_RETRY_S = 10


@dataclass(eq=False)
class LiveRide:
    """The live events of one ride for one stream, as (stream sequence, event)."""

    queue: asyncio.Queue[tuple[int, CloudEvent]] = field(
        default_factory=lambda: asyncio.Queue(LIVE_QUEUE_SIZE))
    # set when an event could not be queued: the stream re-reads from its last sequence
    missed: bool = False

    async def next(self, timeout: float) -> tuple[int, CloudEvent]:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            raise FeedIdle() from None


class RideFanout:
    """One JetStream consumer for all of a process's ride event streams."""

    def __init__(self, nc: NATS, js: JetStreamContext) -> None:
        self.nc = nc
        self.js = js
        self._listeners: dict[str, set[LiveRide]] = {}
        self._lock = asyncio.Lock()
        self._sub: Subscription | None = None
        self._consumer: str | None = None

    async def _deliver(self, msg: Msg) -> None:
        try:
            event = parse_event(msg.data)
        except InvalidEvent:
            return
        listeners = self._listeners.get(event.subject)
        if not listeners:
            return
        seq = msg.metadata.sequence.stream
        for live in list(listeners):
            try:
                live.queue.put_nowait((seq, event))
            except asyncio.QueueFull:
                live.missed = True

    async def _open(self) -> None:
        inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(inbox, cb=self._deliver)
        info = await self.js.add_consumer(STREAM, ConsumerConfig(
            deliver_subject=inbox, filter_subject=ALL_RIDES,
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
    async def listen(self, ride_id: str) -> AsyncIterator[LiveRide]:
        """The ride's events published from now on."""
        live = LiveRide()
        async with self._lock:
            if self._sub is None:
                try:
                    await self._open()
                except BaseException:
                    await self._close()
                    raise
            self._listeners.setdefault(ride_id, set()).add(live)
        try:
            yield live
        finally:
            with anyio.CancelScope(shield=True):  # runs as the client disconnects
                async with self._lock:
                    listeners = self._listeners.get(ride_id, set())
                    listeners.discard(live)
                    if not listeners:
                        self._listeners.pop(ride_id, None)
                    if not self._listeners:
                        await self._close()

    async def aclose(self) -> None:
        async with self._lock:
            self._listeners.clear()
            await self._close()


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
