"""The read models: ``rides`` and ``drivers``, kept by applying events.

An event is applied where it is written: ``Outbox.write`` calls ``project_inline`` in
the transaction that stores the event, so the read model changes when the event commits
— a caller that was told of an event (an API answer, a ride's event stream) never finds
the read model behind it. The ``ride-projector`` and ``driver-projector`` consumers
(``events.consumers.projectors``) apply whatever was not applied that way (an event
that reached the stream by another road), and ``ridehail projections rebuild`` rebuilds
the tables from the event log (events.log).

Applying an event records it as processed in the same transaction, so it is applied
once, whoever gets there first; the consumers are ordered, so what they apply, they
apply in stream order.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlmodel import Session

from domain.geo import driver_cell
from domain.money import to_cents
from domain.status import BEFORE_TRIP, FINAL, RideStatus
from events import catalog as c
from events.envelope import CloudEvent
from events.processed import first_time
from store import transitions
from store.rides import requested_ride
from store.tables import Driver, Ride

RIDE_PROJECTOR = "ride-projector"
DRIVER_PROJECTOR = "driver-projector"


class NotYetKnown(RuntimeError):
    """An event for a ride the read model has not seen requested; retried later."""


def apply_ride_event(ride: Ride | None, event: CloudEvent) -> Ride:
    """The read model after ``event``: a pure function of the row and the event.

    ``ride.requested`` makes the row (a repeat leaves it as it is); every other event
    needs the row, and changes it by its type's rule below (``_ON_RIDE_EVENT``), or only
    in ``updated_at`` where the read model shows nothing of it (an offer, a driver's
    answer, a request to cancel: the saga's own events show what came of them)."""
    p = event.payload()
    if isinstance(p, c.RideRequested):
        if ride is None:
            ride = requested_ride(p, event.time)
    elif ride is None:
        raise NotYetKnown(f"{event.type} for ride {event.subject} before it was requested")
    on_event = _ON_RIDE_EVENT.get(event.type)
    if on_event is not None:
        on_event(ride, p, event.time)
    ride.updated_at = max(ride.updated_at, event.time) if ride.updated_at else event.time
    return ride


# --- each ride event's rule: what it changes in the row, given when it happened ----------


def _on_payment_authorized(ride: Ride, p: c.PaymentAuthorized, at: datetime) -> None:
    ride.currency = p.currency
    ride.quoted_cents = to_cents(p.quoted_fare)
    ride.surge_multiplier = p.surge_multiplier
    ride.payment_status = "authorized"
    ride.authorized_cents = to_cents(p.amount)
    if ride.status not in FINAL:  # a hold that comes after the end does not reopen it
        ride.status = RideStatus.MATCHING


def _on_payment_declined(ride: Ride, p: c.PaymentDeclined, at: datetime) -> None:
    ride.payment_status = "declined"


def _on_driver_assigned(ride: Ride, p: c.DriverAssigned, at: datetime) -> None:
    if ride.status not in FINAL:  # nor does an assignment
        ride.status = RideStatus.DRIVER_ASSIGNED
        ride.driver_id = p.driver_id
        ride.assigned_at = at


def _on_driver_released(ride: Ride, p: c.DriverReleased, at: datetime) -> None:
    # Only a driver backing out sends the ride back to matching; a release that is part
    # of the ride ending leaves the driver on the record.
    if (p.reason == "driver_cancelled" and ride.status in BEFORE_TRIP
            and ride.driver_id == p.driver_id):
        ride.status, ride.driver_id, ride.assigned_at = RideStatus.MATCHING, None, None


def _on_driver_arrived(ride: Ride, p: c.DriverReported, at: datetime) -> None:
    if ride.status == RideStatus.DRIVER_ASSIGNED:
        ride.status = RideStatus.DRIVER_ARRIVED


def _on_trip_started(ride: Ride, p: c.DriverReported, at: datetime) -> None:
    if ride.status in BEFORE_TRIP:
        ride.status = RideStatus.IN_PROGRESS


def _on_payment_captured(ride: Ride, p: c.PaymentMoved, at: datetime) -> None:
    ride.payment_status = "captured"
    ride.captured_cents += to_cents(p.amount)
    if p.purpose == "cancellation_fee":
        ride.cancellation_fee_cents = to_cents(p.amount)


def _on_payment_voided(ride: Ride, p: c.PaymentMoved, at: datetime) -> None:
    ride.payment_status = "voided"


def _on_payment_refunded(ride: Ride, p: c.PaymentMoved, at: datetime) -> None:
    ride.payment_status = "refunded"


def _on_completed(ride: Ride, p: c.RideCompleted, at: datetime) -> None:
    ride.status = RideStatus.COMPLETED
    ride.final_cents = to_cents(p.final_fare)
    if p.fare_adjusted is not None:
        ride.fare_adjusted = p.fare_adjusted.model_dump_json()


def _on_cancelled(ride: Ride, p: c.RideCancelled, at: datetime) -> None:
    ride.status = RideStatus.CANCELLED
    if p.cancellation_fee is not None:
        ride.cancellation_fee_cents = to_cents(p.cancellation_fee)
    if p.final_fare is not None:
        ride.final_cents = to_cents(p.final_fare)
    if p.fare_adjusted is not None:
        ride.fare_adjusted = p.fare_adjusted.model_dump_json()


def _on_failed(ride: Ride, p: c.RideFailed, at: datetime) -> None:
    ride.status = RideStatus.FAILED
    ride.failure_reason = p.reason


# Event type -> its rule. The payload is the type's model (events.catalog: one model per
# type), so each rule takes it as that model.
_ON_RIDE_EVENT: dict[str, Callable[[Ride, Any, datetime], None]] = {
    "ride.payment_authorized": _on_payment_authorized,
    "ride.payment_declined": _on_payment_declined,
    "ride.driver_assigned": _on_driver_assigned,
    "ride.driver_released": _on_driver_released,
    "ride.driver_arrived": _on_driver_arrived,
    "ride.trip_started": _on_trip_started,
    "ride.payment_captured": _on_payment_captured,
    "ride.payment_voided": _on_payment_voided,
    "ride.payment_refunded": _on_payment_refunded,
    "ride.completed": _on_completed,
    "ride.cancelled": _on_cancelled,
    "ride.failed": _on_failed,
}


def apply_driver_event(driver: Driver | None, event: CloudEvent,
                       rebuilding: bool = False) -> Driver:
    """The driver's read model after ``event``. Position comes from the events; going
    online or offline is applied by the API atomically with the event (a conditional
    update that cannot undo a reservation), so here only while rebuilding."""
    p = event.payload()
    if driver is None:
        driver = Driver(driver_id=event.subject)
    if isinstance(p, c.DriverWentOnline | c.DriverLocationUpdated):
        driver.lat, driver.lng = p.location.lat, p.location.lng
        driver.h3_cell = driver_cell(p.location)
    if rebuilding and isinstance(p, c.DriverWentOnline) and driver.status == "offline":
        driver.status = "available"
    if rebuilding and isinstance(p, c.DriverWentOffline) and driver.status == "available":
        driver.status = "offline"
    driver.updated_at = event.time
    return driver


def project_inline(session: Session, events: list[CloudEvent]) -> set[str]:
    """Apply freshly written events to the read models in the writer's transaction;
    returns the ids of those applied."""
    applied = set()
    for event in events:
        if event.type.startswith("ride."):
            # held while it is applied: the session keeps loaded rows only as long as
            # someone does, and project_ride_event would otherwise load it again
            ride = session.get(Ride, event.subject)
            if event.type != "ride.requested" and ride is None:
                continue  # a ride this database does not know (yet): the projector waits
            project_ride_event(session, event)
        elif event.type.startswith("driver."):
            project_driver_event(session, event)
        else:
            continue
        applied.add(event.id)
    return applied


def project_ride_event(session: Session, event: CloudEvent, rebuilding: bool = False) -> None:
    """Apply a RIDES event once. While rebuilding, also replay the saga's effects on
    drivers (reservations and releases), which in normal operation the activities make
    directly and atomically; replaying them then would race with the live saga."""
    if not first_time(session, RIDE_PROJECTOR, event.id):
        return
    ride = apply_ride_event(session.get(Ride, event.subject), event)
    session.add(ride)
    p = event.payload()
    driver_id = getattr(p, "driver_id", None)
    if event.type == "ride.trip_started" and ride.driver_id:
        transitions.start_trip(session, ride.driver_id, ride.ride_id, event.time)
    elif rebuilding and driver_id and event.type in ("ride.driver_offered",
                                                     "ride.driver_assigned"):
        transitions.bind(session, driver_id, ride.ride_id, event.time)
    elif rebuilding and driver_id and event.type == "ride.driver_released":
        transitions.free(session, driver_id, ride.ride_id, event.time)


def project_driver_event(session: Session, event: CloudEvent, rebuilding: bool = False) -> None:
    if not first_time(session, DRIVER_PROJECTOR, event.id):
        return
    session.add(apply_driver_event(session.get(Driver, event.subject), event, rebuilding))
