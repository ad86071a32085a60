"""Which consumers are held up by an infrastructure failure, and since when, and how
many events each group handled, failed and dead-lettered: for ``/readyz``, ``/metrics``
and the log."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass
class Blocked:
    since: datetime
    reason: str
    attempts: int = 1
    _since_mono: float = field(default_factory=time.monotonic, repr=False)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self._since_mono


class ConsumerHealth:
    """Per durable: blocked (since when, why, how many tries) or not; and how many api
    events found their ride's workflow closed. One per process."""

    def __init__(self) -> None:
        self._blocked: dict[str, Blocked] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._late: dict[str, int] = {}

    def count(self, group: str, outcome: str) -> None:
        """One event of ``group`` ``handled``, ``failed`` (to be retried) or
        ``dead_lettered``."""
        key = (group, outcome)
        self._counts[key] = self._counts.get(key, 0) + 1

    def counts(self) -> dict[tuple[str, str], int]:
        return dict(self._counts)

    def block(self, durable: str, reason: str) -> Blocked:
        current = self._blocked.get(durable)
        if current is None:
            current = self._blocked[durable] = Blocked(datetime.now(UTC), reason)
        else:
            current.reason = reason
            current.attempts += 1
        return current

    def clear(self, durable: str) -> Blocked | None:
        return self._blocked.pop(durable, None)

    def blocked(self) -> dict[str, Blocked]:
        return dict(self._blocked)

    def by_group(self) -> dict[str, float]:
        """Seconds each consumer group has been blocked (its longest-blocked durable)."""
        out: dict[str, float] = {}
        for durable, b in self._blocked.items():
            group = durable.rsplit("-p", 1)[0] if durable.rsplit("-p", 1)[-1].isdigit() \
                else durable
            out[group] = max(out.get(group, 0.0), b.seconds)
        return out

    def summary(self) -> str | None:
        if not self._blocked:
            return None
        return "; ".join(
            f"{d} blocked since {b.since.isoformat(timespec='seconds')} "
            f"({b.attempts} tries): {b.reason}" for d, b in sorted(self._blocked.items()))

    # --- events that found their ride's workflow closed ------------------------------

    def note_late(self, event_type: str) -> None:
        """An api event arrived after its ride's workflow had closed (the workflow-trigger
        records it; ``/metrics`` shows the counts)."""
        self._late[event_type] = self._late.get(event_type, 0) + 1

    def late_events(self) -> dict[str, int]:
        return dict(self._late)
