"""Who is told what: the rider of assignment, arrival and the ride's end; the driver of
offers and of losing a ride to a cancellation."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.notifications import NOTIFYING_TYPES, notifications_for
from events import catalog as c
from events.envelope import new_event

RIDE = "ride1"


def _told(event_type: str, data: c.Payload) -> list[tuple[str, str]]:
    event = new_event(event_type, data, source="ridehail/worker", subject=RIDE)
    return [(n.user_id, n.kind) for n in notifications_for(event, "rider1")]


@pytest.mark.parametrize(
    ("event_type", "data", "told"),
    [
        (
            "ride.driver_assigned",
            c.DriverAssigned(ride_id=RIDE, driver_id="d1"),
            [("rider1", "driver_assigned")],
        ),
        (
            "ride.driver_arrived",
            c.DriverReported(ride_id=RIDE, driver_id="d1"),
            [("rider1", "driver_arrived")],
        ),
        (
            "ride.completed",
            c.RideCompleted(
                ride_id=RIDE,
                final_fare=Decimal("9.10"),
                currency="USD",
                distance_m=2300,
                duration_s=540,
            ),
            [("rider1", "ride_completed")],
        ),
        (
            "ride.cancelled",
            c.RideCancelled(ride_id=RIDE, by_role="rider"),
            [("rider1", "ride_cancelled")],
        ),
        (
            "ride.failed",
            c.RideFailed(ride_id=RIDE, reason="no_driver_available"),
            [("rider1", "ride_failed")],
        ),
        (
            "ride.driver_offered",
            c.DriverOffered(
                ride_id=RIDE,
                driver_id="d1",
                offer_id="o",
                fare=Decimal("9.00"),
                currency="USD",
                expires_at="2025-01-01T00:00:15+00:00",
            ),
            [("d1", "ride_offered")],
        ),
        # the driver loses a ride they did not give up themselves
        (
            "ride.driver_released",
            c.DriverReleased(ride_id=RIDE, driver_id="d1", reason="rider_cancelled"),
            [("d1", "ride_cancelled")],
        ),
        (
            "ride.driver_released",
            c.DriverReleased(ride_id=RIDE, driver_id="d1", reason="admin_cancelled"),
            [("d1", "ride_cancelled")],
        ),
        (
            "ride.driver_released",
            c.DriverReleased(ride_id=RIDE, driver_id="d1", reason="ride_failed"),
            [("d1", "ride_cancelled")],
        ),
        # the driver backed out: the rider hears we are finding another
        (
            "ride.driver_released",
            c.DriverReleased(ride_id=RIDE, driver_id="d1", reason="driver_cancelled"),
            [("rider1", "driver_cancelled")],
        ),
        # nobody needs telling
        (
            "ride.driver_released",
            c.DriverReleased(ride_id=RIDE, driver_id="d1", reason="trip_completed"),
            [],
        ),
        (
            "ride.driver_released",
            c.DriverReleased(ride_id=RIDE, driver_id="d1", reason="offer_declined"),
            [],
        ),
        (
            "ride.payment_captured",
            c.PaymentMoved(ride_id=RIDE, amount=Decimal("9.10"), currency="USD"),
            [],
        ),
        ("ride.trip_started", c.DriverReported(ride_id=RIDE, driver_id="d1"), []),
    ],
)
def test_who_is_told(event_type: str, data: c.Payload, told: list[tuple[str, str]]) -> None:
    assert _told(event_type, data) == told


def test_messages_say_what_happened() -> None:
    event = new_event(
        "ride.cancelled",
        c.RideCancelled(
            ride_id=RIDE, by_role="rider", cancellation_fee=Decimal("5.00"), currency="USD"
        ),
        source="ridehail/worker",
        subject=RIDE,
    )
    [notice] = notifications_for(event, "rider1")
    assert "5.00 USD" in notice.message
    event = new_event(
        "ride.failed",
        c.RideFailed(ride_id=RIDE, reason="payment_declined"),
        source="ridehail/worker",
        subject=RIDE,
    )
    assert "payment_declined" in notifications_for(event, "rider1")[0].message


_SILENT_TYPES = sorted(t for t in c.CATALOG if t.startswith("ride.") and t not in NOTIFYING_TYPES)


@pytest.mark.parametrize("event_type", _SILENT_TYPES)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_the_notifier_reads_every_type_that_tells_anyone(event_type: str,
                                                         data: st.DataObject) -> None:
    # the notifier's durables deliver it only NOTIFYING_TYPES: every other ride event
    # type must tell nobody anything, whatever it carries
    versions = c.CATALOG[event_type]
    model = versions[max(versions)]
    amounts = {name: st.decimals(allow_nan=False, allow_infinity=False, places=2)
               for name, f in model.model_fields.items() if f.annotation is Decimal}
    payload = data.draw(st.builds(model, **amounts))
    assert _told(event_type, payload) == []
