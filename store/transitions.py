"""The conditional state changes of drivers and offers that every ride makes: a driver
reserved, on a trip, freed; an offer answered, expired or declined. Shared by the API,
the matching activities and the projection.

The statements are built once and executed on the session's connection: an ORM bulk
update builds, annotates and checks its statement anew on every call (about ten times
the cost of the update itself). A row the session already holds is expired after an
update, so the session never hands out the state from before it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Executable, Table, bindparam, update
from sqlmodel import Session

from store.db import table_of
from store.tables import Driver, Offer

_DRIVERS: Table = table_of(Driver)
_OFFERS: Table = table_of(Offer)
_d = _DRIVERS.c
# what a driver transition changes
_BINDING = ["status", "ride_id", "updated_at"]

# available → reserved for the ride
_RESERVE = (
    update(_DRIVERS)
    .where(_d.driver_id == bindparam("driver"))
    .where(_d.status == "available")
    .values(status="reserved", ride_id=bindparam("ride"), updated_at=bindparam("at"))
)
# bound to the ride (reserved or on the trip) → available
_FREE = (
    update(_DRIVERS)
    .where(_d.driver_id == bindparam("driver"))
    .where(_d.ride_id == bindparam("ride"))
    .values(status="available", ride_id=None, updated_at=bindparam("at"))
)
# reserved for the ride → on its trip
_START_TRIP = (
    update(_DRIVERS)
    .where(_d.driver_id == bindparam("driver"))
    .where(_d.ride_id == bindparam("ride"))
    .where(_d.status == "reserved")
    .values(status="on_trip", updated_at=bindparam("at"))
)
# whatever the driver was doing → reserved for the ride (only while rebuilding)
_BIND = (
    update(_DRIVERS)
    .where(_d.driver_id == bindparam("driver"))
    .values(status="reserved", ride_id=bindparam("ride"), updated_at=bindparam("at"))
)
# a pending offer → answered (accepted, declined) or closed (expired, declined)
_CLOSE_OFFER = (
    update(_OFFERS)
    .where(_OFFERS.c.offer_id == bindparam("offer"))
    .where(_OFFERS.c.status == "pending")
    .values(status=bindparam("outcome"))
)


def _changed(session: Session, statement: Executable, params: dict[str, object],
             model: type[Driver | Offer], key: str, attributes: list[str]) -> bool:
    """Run a one-row update; True if it changed the row."""
    session.flush()  # the caller's own changes go first, as an ORM statement's would
    result = session.connection().execute(statement, params)
    held = session.identity_map.get(session.identity_key(model, key))
    if held is not None:
        session.expire(held, attributes)
    return bool(result.rowcount == 1)


def _driver_changed(session: Session, statement: Executable, driver_id: str, ride_id: str,
                    at: datetime) -> bool:
    return _changed(session, statement, {"driver": driver_id, "ride": ride_id, "at": at},
                    Driver, driver_id, _BINDING)


def reserve(session: Session, driver_id: str, ride_id: str, at: datetime) -> bool:
    """Reserve the driver for the ride if still available; True if this call got them."""
    return _driver_changed(session, _RESERVE, driver_id, ride_id, at)


def free(session: Session, driver_id: str, ride_id: str, at: datetime) -> bool:
    """Make the driver available again if the ride still holds them; True if it did."""
    return _driver_changed(session, _FREE, driver_id, ride_id, at)


def start_trip(session: Session, driver_id: str, ride_id: str, at: datetime) -> bool:
    """The driver reserved for the ride is now on its trip; True if they were reserved."""
    return _driver_changed(session, _START_TRIP, driver_id, ride_id, at)


def bind(session: Session, driver_id: str, ride_id: str, at: datetime) -> bool:
    """Reserve the driver for the ride whatever their state (a rebuild replaying the
    saga's reservations in stream order)."""
    return _driver_changed(session, _BIND, driver_id, ride_id, at)


def close_offer(session: Session, offer_id: str, outcome: str) -> bool:
    """Give a pending offer its outcome; True if it was still pending (the api's answer
    and the saga's expiry are both made this way, and one of the two wins)."""
    return _changed(session, _CLOSE_OFFER, {"offer": offer_id, "outcome": outcome},
                    Offer, offer_id, ["status"])
