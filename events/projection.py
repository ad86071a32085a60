"""The read models: ``rides`` and ``drivers``, kept by applying events.

An event is applied where it is written: ``Outbox.write`` calls ``project_inline`` in
the transaction that stores the event, so the read model changes when the event commits
— a caller that was told of an event (an API answer, a ride's event stream) never finds
the read model behind it. The ``ride-projector`` and ``driver-projector`` consumers
(``events.consumers.projectors``) apply whatever was not applied that way (an event
that reached the stream by another road) and rebuild the tables from the streams
(``ridehail projections rebuild``).

Applying an event records it as processed in the same transaction, so it is applied
once, whoever gets there first; the consumers are ordered, so what they apply, they
apply in stream order.
"""

from __future__ import annotations

from sqlmodel import Session

from domain.geo import driver_cell, zone_cell
from domain.money import to_cents
from domain.status import BEFORE_TRIP, FINAL, RideStatus
from events import catalog as c
from events.envelope import CloudEvent
from events.processed import first_time
from store import transitions
from store.tables import Driver, Ride

RIDE_PROJECTOR = "ride-projector"
DRIVER_PROJECTOR = "driver-projector"
# The driver has not yet been bound to the ride, or is bound but the trip hasn't started.


class NotYetKnown(RuntimeError):
    """An event for a ride the read model has not seen requested; retried later."""


def apply_ride_event(ride: Ride | None, event: CloudEvent) -> Ride:
    """The read model after ``event``: a pure function of the row and the event."""
    p = event.payload()
    if isinstance(p, c.RideRequested):
        if ride is None:
            ride = Ride(
                ride_id=p.ride_id, rider_id=p.rider_id,
                pickup_lat=p.pickup.lat, pickup_lng=p.pickup.lng,
                dropoff_lat=p.dropoff.lat, dropoff_lng=p.dropoff.lng,
                pickup_zone=zone_cell(p.pickup), payment_method=p.payment_method,
                quote_id=p.quote_id, created_at=event.time, updated_at=event.time,
            )
    elif ride is None:
        raise NotYetKnown(f"{event.type} for ride {event.subject} before it was requested")
    final = ride.status in FINAL
    match event.type, p:
        case "ride.payment_authorized", c.PaymentAuthorized():
            ride.currency = p.currency
            ride.quoted_cents = to_cents(p.quoted_fare)
            ride.surge_multiplier = p.surge_multiplier
            ride.payment_status = "authorized"
            ride.authorized_cents = to_cents(p.amount)
            if not final:
                ride.status = RideStatus.MATCHING
        case "ride.payment_declined", c.PaymentDeclined():
            ride.payment_status = "declined"
        case "ride.driver_assigned", c.DriverAssigned():
            if not final:
                ride.status = RideStatus.DRIVER_ASSIGNED
                ride.driver_id = p.driver_id
                ride.assigned_at = event.time
        case "ride.driver_released", c.DriverReleased():
            # only a driver backing out sends the ride back to matching; a release that
            # is part of the ride ending leaves the driver on the record
            if (p.reason == "driver_cancelled" and ride.status in BEFORE_TRIP
                    and ride.driver_id == p.driver_id):
                ride.status, ride.driver_id, ride.assigned_at = RideStatus.MATCHING, None, None
        case "ride.driver_arrived", c.DriverReported():
            if ride.status == RideStatus.DRIVER_ASSIGNED:
                ride.status = RideStatus.DRIVER_ARRIVED
        case "ride.trip_started", c.DriverReported():
            if ride.status in BEFORE_TRIP:
                ride.status = RideStatus.IN_PROGRESS
        case "ride.payment_captured", c.PaymentMoved():
            ride.payment_status = "captured"
            ride.captured_cents += to_cents(p.amount)
            if p.purpose == "cancellation_fee":
                ride.cancellation_fee_cents = to_cents(p.amount)
        case "ride.payment_voided", c.PaymentMoved():
            ride.payment_status = "voided"
        case "ride.payment_refunded", c.PaymentMoved():
            ride.payment_status = "refunded"
        case "ride.completed", c.RideCompleted():
            ride.status = RideStatus.COMPLETED
            ride.final_cents = to_cents(p.final_fare)
            if p.fare_adjusted is not None:
                ride.fare_adjusted = p.fare_adjusted.model_dump_json()
        case "ride.cancelled", c.RideCancelled():
            ride.status = RideStatus.CANCELLED
            if p.cancellation_fee is not None:
                ride.cancellation_fee_cents = to_cents(p.cancellation_fee)
            if p.final_fare is not None:
                ride.final_cents = to_cents(p.final_fare)
            if p.fare_adjusted is not None:
                ride.fare_adjusted = p.fare_adjusted.model_dump_json()
        case "ride.failed", c.RideFailed():
            ride.status = RideStatus.FAILED
            ride.failure_reason = p.reason
    ride.updated_at = max(ride.updated_at, event.time) if ride.updated_at else event.time
    return ride


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
