"""Rides: request, read, follow and steer them.

A request or a driver's report is a state change plus an event, committed together
through the outbox; the saga reacts to the event. A ride is visible to its rider, to a
driver it was offered or assigned to, and to admins; to anyone else it does not exist.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from sqlalchemy import exists, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from activities.pricing import live_quote
from api.auth import Caller, Principal, Rider
from api.problems import Problem, error_responses
from api.schemas import (
    Accepted,
    CancelIn,
    CloudEventOut,
    RideEvents,
    RideIn,
    RideOut,
    RidePage,
    RideStatus,
    TripReport,
)
from api.services import Deps
from events import catalog as c
from events.envelope import CloudEvent, new_event
from events.history import ride_history
from ridehail.geo import zone_cell
from ridehail.tables import IdempotencyKey, Offer, Ride, utcnow

router = APIRouter(prefix="/v1/rides", tags=["rides"])
SOURCE = "ridehail/api"
FINAL = ("completed", "cancelled", "failed")
NOT_FOUND = "No such ride"


# --- visibility -----------------------------------------------------------------------


def _offered_to(driver_id: str):  # type: ignore[no-untyped-def]
    return exists().where(col(Offer.ride_id) == Ride.ride_id, col(Offer.driver_id) == driver_id)


def visible(who: Principal):  # type: ignore[no-untyped-def]
    """The SQL condition for the rides ``who`` may see."""
    if who.role == "admin":
        return True
    if who.role == "rider":
        return col(Ride.rider_id) == who.sub
    return or_(col(Ride.driver_id) == who.sub, _offered_to(who.sub))


def get_visible(session: Session, ride_id: str, who: Principal) -> Ride:
    ride = session.exec(select(Ride).where(Ride.ride_id == ride_id).where(visible(who))).first()
    if ride is None:
        raise Problem(404, NOT_FOUND)
    return ride


# --- request and read -------------------------------------------------------------------


def _body_hash(body: RideIn) -> str:
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


@router.post("", status_code=202, response_model=RideOut,
             responses=error_responses(401, 403, 422))
async def request_ride(
    body: RideIn,
    who: Rider,
    svc: Deps,
    response: Response,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> RideOut:
    """Ask for a ride. The saga starts at once; follow it with `GET /v1/rides/{id}`.
    With `Idempotency-Key`, a repeat with the same body returns the same ride."""
    digest = _body_hash(body)

    def work(session: Session) -> tuple[Ride, list[CloudEvent]]:
        if idempotency_key:
            seen = session.get(IdempotencyKey, (who.sub, idempotency_key))
            if seen is not None:
                if seen.request_hash != digest:
                    raise Problem(422, "This Idempotency-Key was used with a different body",
                                  errors=[{"field": "header.Idempotency-Key",
                                           "message": "reused with another body"}])
                ride = session.get(Ride, seen.ride_id)
                assert ride is not None
                return ride, []
        now = utcnow()
        if body.quote_id and live_quote(session, body.quote_id, who.sub, now) is None:
            raise Problem(422, "The quote is unknown, not yours or expired; request a new one",
                          errors=[{"field": "body.quote_id", "message": "no live quote"}])
        ride = Ride(
            ride_id=uuid.uuid4().hex, rider_id=who.sub, status="requested",
            pickup_lat=body.pickup.lat, pickup_lng=body.pickup.lng,
            dropoff_lat=body.dropoff.lat, dropoff_lng=body.dropoff.lng,
            pickup_zone=zone_cell(body.pickup), payment_method=body.payment_method,
            quote_id=body.quote_id, created_at=now, updated_at=now,
        )
        session.add(ride)
        if idempotency_key:
            session.add(IdempotencyKey(rider_id=who.sub, key=idempotency_key,
                                       request_hash=digest, ride_id=ride.ride_id))
        event = new_event(
            "ride.requested",
            c.RideRequested(ride_id=ride.ride_id, rider_id=who.sub, pickup=body.pickup,
                            dropoff=body.dropoff, quote_id=body.quote_id,
                            payment_method=body.payment_method),
            source=SOURCE, subject=ride.ride_id, time=now,
        )
        return ride, [event]

    try:
        ride = await svc.outbox.write(work)
    except IntegrityError:
        # A concurrent request with the same key won the insert; answer as its repeat.
        ride = await svc.outbox.write(work)
    response.headers["Location"] = f"/v1/rides/{ride.ride_id}"
    return RideOut.of(ride)


def _encode_cursor(ride: Ride) -> str:
    raw = f"{ride.created_at.isoformat()}|{ride.ride_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, ride_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(created), ride_id
    except (ValueError, UnicodeDecodeError):
        raise Problem(422, "Invalid cursor; pass back the next_cursor of a previous page",
                      errors=[{"field": "query.cursor", "message": "invalid cursor"}]) from None


@router.get("", response_model=RidePage, responses=error_responses(401, 422))
async def list_rides(
    who: Caller,
    svc: Deps,
    status: RideStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> RidePage:
    """Your rides (an admin's: everyone's), newest first, a page at a time."""
    after = _decode_cursor(cursor) if cursor else None

    def run(session: Session) -> list[Ride]:
        q = select(Ride).where(visible(who))
        if status:
            q = q.where(Ride.status == status)
        if after:
            created, ride_id = after
            q = q.where(or_(col(Ride.created_at) < created,
                            (col(Ride.created_at) == created) & (col(Ride.ride_id) < ride_id)))
        q = q.order_by(col(Ride.created_at).desc(), col(Ride.ride_id).desc()).limit(limit + 1)
        return list(session.exec(q))

    rides = await svc.db.read(run)
    more = len(rides) > limit
    rides = rides[:limit]
    return RidePage(rides=[RideOut.of(r) for r in rides],
                    next_cursor=_encode_cursor(rides[-1]) if more else None)


@router.get("/{ride_id}", response_model=RideOut, responses=error_responses(401, 404))
async def get_ride(ride_id: str, who: Caller, svc: Deps) -> RideOut:
    """The ride as the read model has it."""
    return RideOut.of(await svc.db.read(lambda s: get_visible(s, ride_id, who)))


@router.get("/{ride_id}/events", response_model=RideEvents,
            responses=error_responses(401, 404))
async def ride_events(ride_id: str, who: Caller, svc: Deps) -> RideEvents:
    """The ride's CloudEvents in the order they were published, from the RIDES stream."""
    await svc.db.read(lambda s: get_visible(s, ride_id, who))
    history = await ride_history(svc.js, ride_id)
    return RideEvents(events=[CloudEventOut.model_validate(e.model_dump(mode="json"))
                              for _, e in history])


# --- steering -----------------------------------------------------------------------------


async def _steer(
    svc: Deps, ride_id: str, who: Principal, event_type: str,
    decide: Callable[[Session, Ride], c.Payload],
) -> Accepted:
    """Check the caller may do this now (``decide`` raises 404/409 if not), then commit
    the event that tells the saga."""

    def work(session: Session) -> tuple[Accepted, list[CloudEvent]]:
        ride = get_visible(session, ride_id, who)
        event = new_event(event_type, decide(session, ride), source=SOURCE, subject=ride_id)
        return Accepted(ride_id=ride_id, event_id=event.id), [event]

    return await svc.outbox.write(work)


def _conflict(ride: Ride, action: str) -> Problem:
    return Problem(409, f"Cannot {action} a ride that is {ride.status}")


@router.post("/{ride_id}/cancel", status_code=202, response_model=Accepted,
             responses=error_responses(401, 403, 404, 409, 422))
async def cancel_ride(ride_id: str, who: Caller, svc: Deps,
                      body: CancelIn | None = None) -> Accepted:
    """Cancel, as the ride's rider or its assigned driver (admins too)."""

    def decide(session: Session, ride: Ride) -> c.Payload:
        if who.role == "driver" and ride.driver_id != who.sub:
            raise Problem(403, "Only the assigned driver can cancel this ride")
        if ride.status in FINAL:
            raise _conflict(ride, "cancel")
        return c.CancellationRequested(ride_id=ride_id, by_role=who.role, by_id=who.sub,
                                       reason=body.reason if body else None)

    return await _steer(svc, ride_id, who, "ride.cancellation_requested", decide)


def _pending_offer(session: Session, ride: Ride, driver_id: str) -> Offer:
    offers = list(session.exec(select(Offer).where(Offer.ride_id == ride.ride_id)
                               .where(Offer.driver_id == driver_id)))
    live = [o for o in offers if o.status == "pending" and o.expires_at > utcnow()]
    if not live:
        raise Problem(409, "You have no open offer for this ride (it expired or was answered)")
    return live[0]


def _answer(event_type: str, verb: str):  # type: ignore[no-untyped-def]
    async def answer(ride_id: str, who: Caller, svc: Deps) -> Accepted:
        if who.role != "driver":
            raise Problem(403, f"Only the offered driver can {verb} a ride")

        def decide(session: Session, ride: Ride) -> c.Payload:
            offer = _pending_offer(session, ride, who.sub)
            return c.DriverAnswered(ride_id=ride_id, driver_id=who.sub, offer_id=offer.offer_id)

        return await _steer(svc, ride_id, who, event_type, decide)

    answer.__doc__ = f"As the offered driver, {verb} the ride while the offer is open."
    return answer


def _report(event_type: str, verb: str, needs: str):  # type: ignore[no-untyped-def]
    async def report(ride_id: str, who: Caller, svc: Deps) -> Accepted:
        if who.role != "driver":
            raise Problem(403, f"Only the assigned driver can {verb}")

        def decide(session: Session, ride: Ride) -> c.Payload:
            if ride.driver_id != who.sub:
                raise Problem(403, f"Only the assigned driver can {verb}")
            if ride.status != needs:
                raise _conflict(ride, verb)
            return c.DriverReported(ride_id=ride_id, driver_id=who.sub)

        return await _steer(svc, ride_id, who, event_type, decide)

    report.__doc__ = f"As the assigned driver, {verb} (the ride must be {needs})."
    return report


for _path, _handler in (
    ("accept", _answer("ride.driver_accepted", "accept")),
    ("decline", _answer("ride.driver_declined", "decline")),
    ("arrive", _report("ride.driver_arrived", "report arrival", "driver_assigned")),
    ("start", _report("ride.trip_started", "start the trip", "driver_arrived")),
):
    router.add_api_route(f"/{{ride_id}}/{_path}", _handler, methods=["POST"], status_code=202,
                         response_model=Accepted, name=f"{_path}_ride",
                         responses=error_responses(401, 403, 404, 409))


@router.post("/{ride_id}/complete", status_code=202, response_model=Accepted,
             responses=error_responses(401, 403, 404, 409, 422))
async def complete_ride(ride_id: str, body: TripReport, who: Caller, svc: Deps) -> Accepted:
    """As the assigned driver, end the trip with its distance and duration."""
    if who.role != "driver":
        raise Problem(403, "Only the assigned driver can complete the trip")

    def decide(session: Session, ride: Ride) -> c.Payload:
        if ride.driver_id != who.sub:
            raise Problem(403, "Only the assigned driver can complete the trip")
        if ride.status != "in_progress":
            raise _conflict(ride, "complete")
        return c.TripEnded(ride_id=ride_id, driver_id=who.sub, distance_m=body.distance_m,
                           duration_s=body.duration_s)

    return await _steer(svc, ride_id, who, "ride.trip_ended", decide)
