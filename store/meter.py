"""The trip meter in the database: started with the trip, fed by the assigned driver's
location reports, stopped when the trip ends (``domain.meter`` has the rule
that uses it). Each call runs in the caller's transaction: the API's, with the event
that starts, feeds or ends the trip, so the meter and the events never disagree."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from domain.geo import Point, haversine_m
from store.tables import Driver, TripMeter


def start_meter(session: Session, ride_id: str, driver_id: str, at: datetime) -> None:
    """Start the ride's meter at the driver's last known position (the first point)."""
    driver = session.get(Driver, driver_id)
    meter = session.get(TripMeter, ride_id) or TripMeter(
        ride_id=ride_id, driver_id=driver_id, started_at=at)
    if driver is not None and driver.lat is not None and driver.lng is not None:
        meter.points, meter.last_lat, meter.last_lng = 1, driver.lat, driver.lng
    session.add(meter)


def record_point(session: Session, driver: Driver, at: Point) -> None:
    """Add a location report of ``driver`` to the meter of the trip they are driving,
    if any (a driver ``on_trip`` whose meter has not stopped)."""
    if driver.status != "on_trip" or driver.ride_id is None:
        return
    meter = session.get(TripMeter, driver.ride_id)
    if meter is None or meter.ended_at is not None or meter.driver_id != driver.driver_id:
        return
    if meter.last_lat is not None and meter.last_lng is not None:
        meter.distance_m += haversine_m(Point(lat=meter.last_lat, lng=meter.last_lng), at)
    meter.points += 1
    meter.last_lat, meter.last_lng = at.lat, at.lng
    session.add(meter)


def stop_meter(session: Session, ride_id: str, at: datetime) -> None:
    meter = session.get(TripMeter, ride_id)
    if meter is not None and meter.ended_at is None:
        meter.ended_at = at
        session.add(meter)


def read_meter(session: Session, ride_id: str) -> TripMeter | None:
    return session.get(TripMeter, ride_id)
