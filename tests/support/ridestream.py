"""What the RIDES stream holds of a ride, for tests of the transport itself (what was
published, in which order, how many copies). A ride's history is read from the event log
(events.log); this reads the stream (stored subjects are partitioned,
``rides.<p>.<ride_id>.<name>``; see events.streams) with an ephemeral consumer that only
reads and is deleted once read."""

from __future__ import annotations

import contextlib

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events.envelope import CloudEvent, InvalidEvent, parse_event
from events.streams import ride_filter

STREAM = "RIDES"


async def ride_history(js: JetStreamContext, ride_id: str) -> list[tuple[int, CloudEvent]]:
    """Every valid event of the ride on RIDES as (stream sequence, event), in stream
    order."""
    sub = await js.pull_subscribe(
        ride_filter(ride_id), stream=STREAM,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE,
                              inactive_threshold=30, mem_storage=True))
    out: list[tuple[int, CloudEvent]] = []
    info = await sub.consumer_info()
    try:
        pending = info.num_pending or 0
        while pending > 0:
            try:
                msgs = await sub.fetch(min(256, pending), timeout=5)
            except NatsTimeoutError:
                break
            for m in msgs:
                pending -= 1
                with contextlib.suppress(InvalidEvent):
                    out.append((m.metadata.sequence.stream, parse_event(m.data)))
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await js.delete_consumer(STREAM, info.name)
    return out
