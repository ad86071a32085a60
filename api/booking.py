"""Requesting a ride: the rules, apart from HTTP.

A rider's request is taken once per Idempotency-Key (a repeat with the same body gets
the same ride back, another body is refused), only while none of the rider's rides is
still open, and with a quote only while that quote is live. What passes is the ride's
row and its ``ride.requested`` event, written through the outbox in the transaction
that checked all that. ``book_ride`` says no by raising a ``Refused``; ``api.rides``
answers each with its problem.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from api.open_rides import open_ride_of, serialise_rider
from api.schemas import RideIn
from events import catalog as c
from events.envelope import CloudEvent, new_event
from events.outbox import Outbox
from store.quotes import live_quote
from store.rides import requested_ride
from store.tables import IdempotencyKey, Ride, utcnow

SOURCE = "ridehail/api"
# A concurrent repeat (PostgreSQL) loses the key's insert and is answered as a repeat on
# the next try; more than a couple of tries means something else is wrong.
IDEMPOTENT_TRIES = 3


class Refused(Exception):
    """The rules turn this request down."""


class KeyReused(Refused):
    """The Idempotency-Key was used before with another body."""


class KeyWithoutRide(Refused):
    """The Idempotency-Key is known but its ride is not. It cannot happen (the key
    commits with its ride); said rather than answered with some other ride."""


class RideStillOpen(Refused):
    """The rider has a ride that has not ended: one at a time."""

    def __init__(self, ride: Ride) -> None:
        super().__init__(f"ride {ride.ride_id} is {ride.status}")
        self.ride_id = ride.ride_id
        self.status = ride.status


class QuoteNotLive(Refused):
    """The quote is unknown, another rider's, or expired."""


class Contended(Refused):
    """Concurrent requests kept getting in this one's way."""


@dataclass(frozen=True)
class Booking:
    """The ride a request booked, or for a repeat (``replayed``) the one it booked
    before, as it is now."""

    ride: Ride
    replayed: bool = False


def _body_hash(body: RideIn) -> str:
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


async def book_ride(outbox: Outbox, rider_id: str, body: RideIn,
                    idempotency_key: str | None = None) -> Booking:
    """Book the ride ``body`` asks for, for ``rider_id``, or find the one an earlier
    request with the same ``idempotency_key`` booked; raises a ``Refused`` if the rules
    say no."""
    digest = _body_hash(body)

    def work(session: Session) -> tuple[Booking, list[CloudEvent]]:
        return _book(session, rider_id, body, idempotency_key, digest)

    attempt = 1
    while True:
        try:
            return await outbox.write(work)
        except IntegrityError:
            # Only the key can collide (ride ids are random): a concurrent request with
            # the same key committed first. The next try finds its key and answers as a
            # repeat — or refuses the key if its body differed.
            if not idempotency_key or attempt == IDEMPOTENT_TRIES:
                raise Contended() from None
            attempt += 1


def _book(session: Session, rider_id: str, body: RideIn, idempotency_key: str | None,
          digest: str) -> tuple[Booking, list[CloudEvent]]:
    """One try at ``book_ride``, in its write transaction: the checks, then the ride and
    its event."""
    serialise_rider(session, rider_id)
    if idempotency_key:
        earlier = _ride_of_key(session, rider_id, idempotency_key, digest)
        if earlier is not None:
            return Booking(earlier, replayed=True), []
    unfinished = open_ride_of(session, rider_id)
    if unfinished is not None:
        raise RideStillOpen(unfinished)
    now = utcnow()
    if body.quote_id and live_quote(session, body.quote_id, rider_id, now) is None:
        raise QuoteNotLive(body.quote_id)
    requested = c.RideRequested(
        ride_id=uuid.uuid4().hex, rider_id=rider_id, pickup=body.pickup.point,
        dropoff=body.dropoff.point, quote_id=body.quote_id, payment_method=body.payment_method,
    )
    ride = requested_ride(requested, now)
    session.add(ride)
    if idempotency_key:
        session.add(IdempotencyKey(rider_id=rider_id, key=idempotency_key,
                                   request_hash=digest, ride_id=ride.ride_id))
    event = new_event("ride.requested", requested, source=SOURCE, subject=ride.ride_id,
                      time=now)
    return Booking(ride), [event]


def _ride_of_key(session: Session, rider_id: str, idempotency_key: str,
                 digest: str) -> Ride | None:
    """The ride an earlier request with this key booked, or None for a new key."""
    seen = session.get(IdempotencyKey, (rider_id, idempotency_key))
    if seen is None:
        return None
    if seen.request_hash != digest:
        raise KeyReused(idempotency_key)
    ride = session.get(Ride, seen.ride_id)
    if ride is None:
        raise KeyWithoutRide(idempotency_key)
    return ride
