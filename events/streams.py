"""The JetStream streams, created or brought up to date at start (CONTRACT.md §3).

``RIDES`` and ``DRIVERS`` are partitioned by a subject transform: a message published on
``rides.<ride_id>.<name>`` is stored as ``rides.<p>.<ride_id>.<name>`` where ``p`` is a
stable hash of the ride id. Ordered consumers keep one durable per partition with a
single message in flight, so every event of a ride is applied in stream order however
many processes share the consumer.

The streams are a bounded transport, not the record: ``RIDES`` and ``DRIVERS`` keep an
event for ``RIDEHAIL_STREAM_KEEP_S`` (a stream age limit), long enough for every durable
to read it through any outage the window covers; a ride's history is read from the
database's outbox table, which keeps every event. ``NOTIFICATIONS`` keeps a notification
for ``RIDEHAIL_NOTIFICATION_KEEP_S``, as long as the ``notifications`` table keeps its row.
nats-server's memory then holds the windows' rides and notices, not every one ever
booked or sent (docs/DEPLOY.md, sizing).
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    SubjectTransform,
)
from nats.js.errors import NotFoundError

from events.envelope import PARTITIONS

# How long RIDES and DRIVERS keep an event unless RIDEHAIL_STREAM_KEEP_S says otherwise.
STREAM_KEEP_S = 86400.0
# How long NOTIFICATIONS keeps a notification unless RIDEHAIL_NOTIFICATION_KEEP_S says
# otherwise: as long as the notifications table keeps its row (store.prune).
NOTIFICATIONS_KEEP_S = 30 * 86400.0
# JetStream drops a message whose Nats-Msg-Id it has seen within this window, and keeps
# every id of the window in memory (about 200 bytes each). The outbox's copies are what it
# is for: a row whose PubAck was lost is published again by the relay within seconds (a
# pass every second over rows older than 2 s, 5 s to wait for each PubAck) once NATS and
# the database answer, so the window covers the longest broker stall ridehail is tested
# through (nats-server frozen for 180 s, `ridehail chaos`) with room to spare. A copy
# published later still is stored twice, and every consumer skips it by its event id.
DUPLICATE_WINDOW_S = 300.0
# The dead letters' window: a consumer whose ack after dead-lettering was lost
# dead-letters the message again, under the same id, when it comes back. Few messages.
DLQ_DUPLICATE_WINDOW_S = 3600.0


def duplicate_window(keep_s: float) -> float:
    """The duplicate window of a stream that keeps a message ``keep_s`` (0: no limit):
    JetStream refuses a window longer than the stream's age limit."""
    return DUPLICATE_WINDOW_S if keep_s <= 0 else min(DUPLICATE_WINDOW_S, keep_s)


def _partitioned(prefix: str) -> SubjectTransform:
    return SubjectTransform(
        src=f"{prefix}.*.*",
        dest=f"{prefix}.{{{{partition({PARTITIONS},1)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}",
    )


def stream_name(config: StreamConfig) -> str:
    """The name of a declared stream (nats-py types it optional; every stream here has one)."""
    if config.name is None:
        raise ValueError(f"a stream configuration without a name: {config}")
    return config.name


def stream_configs(replicas: int = 1, keep_s: float = STREAM_KEEP_S, *,
                   notification_keep_s: float = NOTIFICATIONS_KEEP_S) -> list[StreamConfig]:
    """The declared streams: ``RIDES`` and ``DRIVERS`` keep an event ``keep_s`` seconds
    (``RIDEHAIL_STREAM_KEEP_S``), ``NOTIFICATIONS`` a notification ``notification_keep_s``
    (``RIDEHAIL_NOTIFICATION_KEEP_S``, 30 days), ``DLQ`` until each dead letter is redriven
    or discarded. An age limit of 0 would mean for good to JetStream, so neither may be."""
    if not keep_s > 0:  # NaN too
        raise ValueError(f"RIDES and DRIVERS must keep an event for some time, not {keep_s}s")
    if not notification_keep_s > 0:
        raise ValueError("NOTIFICATIONS must keep a notification for some time, "
                         f"not {notification_keep_s}s")

    def cfg(name: str, prefix: str, *, partitioned: bool, max_age_s: float = 0,
            window_s: float | None = None) -> StreamConfig:
        return StreamConfig(
            name=name,
            subjects=[f"{prefix}.>"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,  # kept for the window, whoever has read it
            discard=DiscardPolicy.OLD,
            max_age=max_age_s,
            duplicate_window=duplicate_window(max_age_s) if window_s is None else window_s,
            subject_transform=_partitioned(prefix) if partitioned else None,
            num_replicas=replicas,
        )

    return [
        cfg("RIDES", "rides", partitioned=True, max_age_s=keep_s),
        cfg("DRIVERS", "drivers", partitioned=True, max_age_s=keep_s),
        cfg("NOTIFICATIONS", "notifications", partitioned=False,
            max_age_s=notification_keep_s),
        cfg("DLQ", "dlq", partitioned=False, window_s=DLQ_DUPLICATE_WINDOW_S),
    ]


async def ensure_streams(js: JetStreamContext, replicas: int = 1,
                         keep_s: float = STREAM_KEEP_S, *,
                         notification_keep_s: float = NOTIFICATIONS_KEEP_S) -> None:
    """Create each stream, or update it to the current configuration (replicas
    included: JetStream changes them in place); safe to repeat. For tests and tools on
    a server of their own: it shortens an age limit at once, deleting what the shorter
    one no longer keeps, where the components' fit-check leaves that to
    ``ridehail streams migrate``."""
    for config in stream_configs(replicas, keep_s, notification_keep_s=notification_keep_s):
        try:
            await js.stream_info(stream_name(config))
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)


def ride_filter(ride_id: str) -> str:
    return f"rides.*.{ride_id}.>"
