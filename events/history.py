"""Reading a ride's events back from the RIDES stream: its history, or history and then
live events as they are published (``RideFeed``).

A feed is an ephemeral push consumer filtered to the ride (stored subjects are
partitioned, ``rides.<p>.<ride_id>.<name>``; see events.streams) delivering to an inbox
this connection subscribes to. Nothing is acknowledged: the consumer only reads. Closing
the feed deletes the consumer and drops the subscription at once; the consumer's
inactivity threshold is the backstop for a process that dies with feeds open.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events.envelope import CloudEvent, InvalidEvent, parse_event
from events.streams import ride_filter

STREAM = "RIDES"
# The server deletes a feed's consumer this long after its subscriber went away without
# deleting it (the process died); a live feed is never inactive, it has a subscriber.
INACTIVE_THRESHOLD_S = 30.0
# One message of a ride's history should arrive well within this; more means trouble.
HISTORY_MESSAGE_TIMEOUT_S = 5.0
CLEANUP_TIMEOUT_S = 5.0
TERMINAL_TYPES = frozenset({"ride.completed", "ride.cancelled", "ride.failed"})


class FeedIdle(TimeoutError):
    """No event arrived within the wait."""


@dataclass
class RideFeed:
    """The ride's events in stream order, from a start sequence on."""

    ride_id: str
    js: JetStreamContext
    sub: Subscription
    consumer: str
    pending_at_start: int  # how many stored events the feed had to deliver when opened
    pending: int  # how many stored events are still to come after the last one read
    last_seq: int = 0

    @property
    def caught_up(self) -> bool:
        """Every event stored so far has been read (later ones may still come)."""
        return self.pending == 0

    async def drained(self) -> bool:
        """The server has nothing more stored for this feed and all it sent was read."""
        info = await self.js.consumer_info(STREAM, self.consumer)
        return info.num_pending == 0 and self.sub.pending_msgs == 0

    async def next(self, timeout: float) -> tuple[int, CloudEvent] | None:
        """The next (stream sequence, event); None for a message that is not a valid
        event (it is skipped: the consumers dead-letter it). Raises ``FeedIdle``."""
        try:
            msg = await self.sub.next_msg(timeout=timeout)
        except NatsTimeoutError:
            raise FeedIdle() from None
        meta = msg.metadata
        self.last_seq = meta.sequence.stream
        self.pending = meta.num_pending
        try:
            return self.last_seq, parse_event(msg.data)
        except InvalidEvent:
            return None


@contextlib.asynccontextmanager
async def ride_feed(nc: NATS, js: JetStreamContext, ride_id: str,
                    after_seq: int = 0) -> AsyncIterator[RideFeed]:
    """A feed of the ride's events with stream sequence above ``after_seq``."""
    inbox = nc.new_inbox()
    # Subscribe before the consumer exists, so its first deliveries have somewhere to go.
    sub = await nc.subscribe(inbox)
    consumer: str | None = None
    try:
        config = ConsumerConfig(
            deliver_subject=inbox,
            filter_subject=ride_filter(ride_id),
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after_seq else DeliverPolicy.ALL,
            opt_start_seq=after_seq + 1 if after_seq else None,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=INACTIVE_THRESHOLD_S,
            mem_storage=True,
            num_replicas=1,
        )
        info = await js.add_consumer(STREAM, config)
        consumer = info.name
        yield RideFeed(ride_id, js, sub, consumer, pending_at_start=info.num_pending,
                       pending=info.num_pending)
    finally:
        # Runs when a client disconnects, i.e. inside a cancelled scope: shield it, or the
        # first await would be cancelled too and the consumer left behind.
        with anyio.move_on_after(CLEANUP_TIMEOUT_S, shield=True):
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if consumer is not None:
                with contextlib.suppress(Exception):  # NotFound: the server beat us to it
                    await js.delete_consumer(STREAM, consumer)


async def ride_history(js: JetStreamContext, ride_id: str,
                       after_seq: int = 0) -> list[tuple[int, CloudEvent]]:
    """Every stored event of the ride (with stream sequence above ``after_seq``) as
    (stream sequence, event), in stream order."""
    sub = await js.pull_subscribe(
        ride_filter(ride_id),
        stream=STREAM,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after_seq else DeliverPolicy.ALL,
            opt_start_seq=after_seq + 1 if after_seq else None,
            ack_policy=AckPolicy.NONE, inactive_threshold=INACTIVE_THRESHOLD_S,
            mem_storage=True),
    )
    out: list[tuple[int, CloudEvent]] = []
    consumer: str | None = None
    try:
        info = await sub.consumer_info()
        consumer = info.name
        pending = info.num_pending
        while len(out) < pending:
            try:
                msgs = await sub.fetch(min(256, pending - len(out)),
                                       timeout=HISTORY_MESSAGE_TIMEOUT_S)
            except NatsTimeoutError:
                break  # the stream lost messages under us (limits); answer what we have
            for m in msgs:
                try:
                    out.append((m.metadata.sequence.stream, parse_event(m.data)))
                except InvalidEvent:
                    pending -= 1  # not shown to clients; the consumers dead-letter it
    finally:
        with anyio.move_on_after(CLEANUP_TIMEOUT_S, shield=True):
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if consumer is not None:
                with contextlib.suppress(Exception):
                    await js.delete_consumer(STREAM, consumer)
    return out
