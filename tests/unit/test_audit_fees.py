"""Audit check 8: a cancellation fee is due only for a rider's cancel made after the
free window, judged by the times the events carry (not when anyone heard of them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from events.envelope import CloudEvent
from ridehail.ops.audit import check_fees

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def event(kind: str, at: float, **data: object) -> CloudEvent:
    return CloudEvent(id=f"{kind}-{at}", source="test", type=f"ride.{kind}", subject="r1",
                      time=T0 + timedelta(seconds=at), dataversion=1,
                      data={"ride_id": "r1", **data})


def fee_at(cancel_s: float, window_s: float = 120) -> list[str]:
    events = [
        event("driver_assigned", 0, driver_id="d1"),
        event("cancellation_requested", cancel_s, by_role="rider", by_id="u1"),
        event("payment_captured", cancel_s + 30, amount="5.00", currency="USD",
              purpose="cancellation_fee"),
    ]
    return check_fees(events, window_s).violations


def test_a_fee_after_the_window_is_due() -> None:
    assert fee_at(121) == []


def test_a_fee_inside_the_window_is_a_violation_whenever_it_was_heard_of() -> None:
    [violation] = fee_at(0.63, window_s=4)
    assert "cancel 0.6s after the assignment (free window 4s)" in violation


def test_a_fee_without_a_riders_cancel_is_a_violation() -> None:
    events = [event("driver_assigned", 0, driver_id="d1"),
              event("payment_captured", 200, amount="5.00", currency="USD",
                    purpose="cancellation_fee")]
    assert "without a rider's cancel" in check_fees(events, 120).violations[0]


def test_fares_are_not_fees() -> None:
    events = [event("payment_captured", 10, amount="7.00", currency="USD", purpose="fare")]
    report = check_fees(events, 120)
    assert report.ok and report.checked == 0
