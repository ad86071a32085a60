"""What a ride's workflow has heard from the api, waiting to be acted on.

The workflow-trigger forwards every api event of the ride as a signal (named for its
type, or ``ride_event`` from older triggers); the inbox drops a redelivered one (same
event id), keeps cancellation requests apart — they interrupt whatever the saga is
waiting for — and holds the rest until the saga takes the one it is waiting for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from workflows.types import RideSignal

CANCELLATION_REQUESTED = "ride.cancellation_requested"


@dataclass(frozen=True)
class CancelRequest:
    by_role: str  # rider, driver or admin
    by_id: str
    reason: str | None
    at: datetime  # when the workflow learnt of it
    # when the api committed it (the event's time); None from triggers that predate it
    requested_at: datetime | None = None

    def asked_at(self, by_event_time: bool) -> datetime:
        """When the cancel counts as made: the event's time where the ride is judged on
        it (``Patches.committed_facts``), else when the workflow heard of it."""
        return self.requested_at if by_event_time and self.requested_at else self.at


@dataclass
class Inbox:
    _events: list[RideSignal] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)
    _cancels: list[CancelRequest] = field(default_factory=list)

    def receive(self, event: RideSignal, now: datetime) -> None:
        if event.event_id in self._seen:
            return  # a redelivered event has no second effect
        self._seen.add(event.event_id)
        if event.type == CANCELLATION_REQUESTED:
            self._cancels.append(
                CancelRequest(
                    by_role=str(event.data.get("by_role", "rider")),
                    by_id=str(event.data.get("by_id", "")),
                    reason=event.data.get("reason"),
                    at=now,
                    requested_at=event.time,
                )
            )
        else:
            self._events.append(event)

    def find(self, pred: Callable[[RideSignal], bool]) -> RideSignal | None:
        return next((e for e in self._events if pred(e)), None)

    def take(self, pred: Callable[[RideSignal], bool]) -> RideSignal | None:
        """The first waiting event matching ``pred``, removed from the inbox."""
        found = self.find(pred)
        if found is not None:
            self._events.remove(found)
        return found

    def live_cancel(self, driver_id: str | None) -> CancelRequest | None:
        """The first cancellation request that applies. A driver's applies only while they
        hold the ride (``driver_id``): a repeat from a driver who already backed out must
        not cancel the rematched ride."""
        return next(
            (c for c in self._cancels if c.by_role != "driver" or c.by_id == driver_id), None
        )

    def forget_driver_cancels(self, driver_id: str) -> None:
        """The driver's cancellation has been acted on (they backed out)."""
        self._cancels = [
            c for c in self._cancels if not (c.by_role == "driver" and c.by_id == driver_id)
        ]
