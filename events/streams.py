"""The JetStream streams, created or brought up to date at start (CONTRACT.md §3).

``RIDES`` and ``DRIVERS`` are partitioned by a subject transform: a message published on
``rides.<ride_id>.<name>`` is stored as ``rides.<p>.<ride_id>.<name>`` where ``p`` is a
stable hash of the ride id. Ordered consumers keep one durable per partition with a
single message in flight, so every event of a ride is applied in stream order however
many processes share the consumer.
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

# JetStream drops a message whose Nats-Msg-Id it has seen within this window. The outbox
# relay retries an unconfirmed publish within seconds, so an hour is ample.
DUPLICATE_WINDOW_S = 3600.0


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


def stream_configs(replicas: int = 1) -> list[StreamConfig]:
    def cfg(name: str, prefix: str, *, partitioned: bool, max_age_s: float = 0) -> StreamConfig:
        return StreamConfig(
            name=name,
            subjects=[f"{prefix}.>"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,  # history kept for replay and rebuilds
            discard=DiscardPolicy.OLD,
            max_age=max_age_s,
            duplicate_window=DUPLICATE_WINDOW_S,
            subject_transform=_partitioned(prefix) if partitioned else None,
            num_replicas=replicas,
        )

    return [
        cfg("RIDES", "rides", partitioned=True),
        cfg("DRIVERS", "drivers", partitioned=True),
        cfg("NOTIFICATIONS", "notifications", partitioned=False, max_age_s=30 * 86400),
        cfg("DLQ", "dlq", partitioned=False),
    ]


async def ensure_streams(js: JetStreamContext, replicas: int = 1) -> None:
    """Create each stream, or update it to the current configuration (replicas
    included: JetStream changes them in place); safe to repeat."""
    for config in stream_configs(replicas):
        try:
            await js.stream_info(stream_name(config))
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)


def ride_filter(ride_id: str) -> str:
    return f"rides.*.{ride_id}.>"
