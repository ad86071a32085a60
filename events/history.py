"""Reading a ride's events back from the RIDES stream."""

from __future__ import annotations

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events.envelope import CloudEvent, InvalidEvent, parse_event
from events.streams import ride_filter


async def ride_history(js: JetStreamContext, ride_id: str) -> list[tuple[int, CloudEvent]]:
    """Every stored event of the ride as (stream sequence, event), in stream order."""
    sub = await js.pull_subscribe(
        ride_filter(ride_id),
        stream="RIDES",
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE,
                              inactive_threshold=30, mem_storage=True),
    )
    out: list[tuple[int, CloudEvent]] = []
    info = await sub.consumer_info()
    try:
        pending = info.num_pending
        while len(out) < pending:
            try:
                msgs = await sub.fetch(min(256, pending - len(out)), timeout=2)
            except NatsTimeoutError:
                break
            for m in msgs:
                try:
                    out.append((m.metadata.sequence.stream, parse_event(m.data)))
                except InvalidEvent:
                    continue  # not shown to clients; the consumers dead-letter it
    finally:
        await sub.unsubscribe()
        await js.delete_consumer("RIDES", info.name)
    return out
