"""Reading a ride's history back from the RIDES stream (stored subjects are partitioned,
``rides.<p>.<ride_id>.<name>``; see events.streams) with an ephemeral consumer that only
reads and is deleted once read; its inactivity threshold is the backstop for a process
that dies meanwhile. Live events come from the API's shared feed (api.fanout)."""

from __future__ import annotations

import contextlib

import anyio
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
# Deleting the read's consumer may not take longer than this (it runs shielded).
CLEANUP_TIMEOUT_S = 5.0
TERMINAL_TYPES = frozenset({"ride.completed", "ride.cancelled", "ride.failed"})


class FeedIdle(TimeoutError):
    """No event arrived within the wait."""


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
        pending = info.num_pending or 0
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
