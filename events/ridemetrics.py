"""Ride outcomes, time to a driver and money captured, counted where their events are
written: in the transaction that stores an event in the outbox, only for events stored
there for the first time, so an activity's retry or a redelivery never counts twice. The
saga's activities write all of these, so the worker's ``/metrics`` carries them."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlmodel import Session

from events.envelope import CloudEvent
from store.tables import Ride

Observation = Callable[[], None]
OUTCOMES = {"ride.completed": "completed", "ride.cancelled": "cancelled",
            "ride.failed": "failed"}
# from the request to the driver's acceptance: the offer timeout is 15 s a driver and
# the matching deadline 120 s by default
ASSIGNED_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300)


class RideMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.finished = Counter(
            "ridehail_rides_finished", "Rides that ended, by outcome (completed, cancelled, "
            "failed) and reason (who cancelled, why it failed)", ["outcome", "reason"],
            registry=self.registry)
        self.time_to_driver = Histogram(
            "ridehail_time_to_driver_assigned_seconds",
            "From the ride's request to a driver assigned", buckets=ASSIGNED_BUCKETS,
            registry=self.registry)
        self.captured = Counter(
            "ridehail_money_captured", "Money captured from riders, by currency and purpose "
            "(fare, cancellation_fee)", ["currency", "purpose"], registry=self.registry)

    def measure(self, session: Session, events: Sequence[CloudEvent]) -> list[Observation]:
        """What the events count, to record once their transaction has committed."""
        observed: list[Observation] = []
        for e in events:
            outcome = OUTCOMES.get(e.type)
            if outcome is not None:
                # who cancelled; why it failed; a completed ride has no reason
                reason = str(e.data.get("by_role" if outcome == "cancelled" else "reason")
                             or "")
                observed.append(self.finished.labels(outcome, reason).inc)
            elif e.type == "ride.driver_assigned":
                ride = session.get(Ride, e.subject)
                if ride is not None:
                    seconds = max(0.0, (_aware(e.time) - _aware(ride.created_at))
                                  .total_seconds())
                    observed.append(functools.partial(self.time_to_driver.observe, seconds))
            elif e.type == "ride.payment_captured":
                amount = float(e.data.get("amount", 0))
                labels = (str(e.data.get("currency", "")), str(e.data.get("purpose", "fare")))
                observed.append(functools.partial(self._capture, amount, labels))
        return observed

    def _capture(self, amount: float, labels: tuple[str, str]) -> None:
        self.captured.labels(*labels).inc(amount)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
