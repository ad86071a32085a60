"""The durable consumers ridehail declares, beside the streams of ``events.streams``.

One declaration serves the consumers that pull from these durables
(``events.consumer``) and the fit-check that holds what a server has against it
(``events.fitcheck``), so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from domain.notifications import NOTIFYING_TYPES
from events.catalog import RIDE_COMMANDS
from events.envelope import PARTITIONS

# A message not acknowledged within this is redelivered (to another process, if the one
# holding it died). Handlers that take longer keep it by reporting progress.
ACK_WAIT_S = 10.0
# The runner counts deliveries itself and dead-letters; JetStream must not silently stop
# redelivering first, so the durables allow unlimited deliveries.
MAX_DELIVER = -1
ORDERED_MAX_ACK_PENDING = 1
UNORDERED_MAX_ACK_PENDING = 256


@dataclass(frozen=True)
class ConsumerGroup:
    """A named consumer on one stream. An ordered group keeps one durable per stream
    partition with one message in flight; an unordered one, a single durable."""

    name: str
    stream: str
    prefix: str  # "rides", "drivers", "notifications"
    ordered: bool = True
    # the event types it reads (None: all); JetStream delivers it no others, so a type it
    # has nothing to do with costs it no delivery and no acknowledgement
    types: frozenset[str] | None = None

    def durables(self) -> list[tuple[str, str]]:
        """(durable name, filter subject) pairs that make up the group."""
        if self.ordered:
            return [(f"{self.name}-p{p}", f"{self.prefix}.{p}.>") for p in range(PARTITIONS)]
        return [(self.name, f"{self.prefix}.>")]

    def filter_subjects(self, subject: str) -> list[str]:
        """What one durable reads of its part of the stream (``subject``: ``rides.3.>``,
        or ``rides.>``): all of it, or only the stored subjects of the group's types
        (``<prefix>.<partition>.<id>.<name>``, events.streams)."""
        if self.types is None:
            return [subject]
        within = subject.removesuffix(">") + ("*." if self.ordered else "*.*.")
        return sorted(within + t.partition(".")[2] for t in self.types)

    def config(self, durable: str, subject: str) -> ConsumerConfig:
        """The declared configuration of one of the group's durables (from the start of
        the stream; a caller may set another start)."""
        filters = self.filter_subjects(subject)
        return ConsumerConfig(
            durable_name=durable,
            name=durable,
            filter_subject=filters[0] if len(filters) == 1 else None,
            filter_subjects=filters if len(filters) > 1 else None,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT_S,
            max_deliver=MAX_DELIVER,
            max_ack_pending=(ORDERED_MAX_ACK_PENDING if self.ordered
                             else UNORDERED_MAX_ACK_PENDING),
        )


WORKFLOW_TRIGGER = ConsumerGroup("workflow-trigger", "RIDES", "rides", types=RIDE_COMMANDS)
RIDE_PROJECTOR = ConsumerGroup("ride-projector", "RIDES", "rides")
DRIVER_PROJECTOR = ConsumerGroup("driver-projector", "DRIVERS", "drivers")
NOTIFIER = ConsumerGroup("notifier", "RIDES", "rides", ordered=False, types=NOTIFYING_TYPES)

CONSUMER_GROUPS: tuple[ConsumerGroup, ...] = (
    WORKFLOW_TRIGGER, RIDE_PROJECTOR, DRIVER_PROJECTOR, NOTIFIER,
)
