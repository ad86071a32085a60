"""Rides: request, read, follow and steer them.

A request or a driver's report is a state change plus an event, committed together
through the outbox; the saga reacts to the event. A ride is visible to its rider, to a
driver it was offered or assigned to, and to admins; to anyone else it does not exist
(404, never 403, so ride ids cannot be probed). Checks run in this order: the token
(401), the role (403), visibility (404), then whether the caller may do this to the ride
as it is now (409).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from sqlalchemy import bindparam, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from api.auth import Caller, Principal, Rider
from api.open_rides import open_ride_of, serialise_rider
from api.problems import Problem, error_responses, invalid
from api.ride_access import decode_cursor, encode_cursor, get_visible, visible
from api.schemas import (
    ID_PATTERN,
    Accepted,
    CancelIn,
    CloudEventOut,
    RideEvents,
    RideIn,
    RideOut,
    RidePage,
    RideStatusName,
    TripReport,
)
from api.services import Deps
from api.streams import SSE, ride_events, wants_event_stream
from domain.geo import zone_cell
from domain.status import FINAL, RideStatus
from events import catalog as c
from events.envelope import CloudEvent, new_event
from events.history import ride_history
from store import transitions
from store.meter import start_meter, stop_meter
from store.quotes import live_quote
from store.tables import IdempotencyKey, Offer, Ride, utcnow

router = APIRouter(prefix="/v1/rides", tags=["rides"])
SOURCE = "ridehail/api"

RideId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN,
                             description="The ride's id",
                             examples=["9b1deb4d3b7d4bad9bdd2b0d7b3dcb6d"])]
# Printable ASCII: the key is stored and compared byte for byte.
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"


# --- request and read -------------------------------------------------------------------


def _body_hash(body: RideIn) -> str:
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


# A concurrent repeat (PostgreSQL) loses the key's insert and is answered as a repeat on
# the next try; more than a couple of tries means something else is wrong.
IDEMPOTENT_TRIES = 3


@router.post(
    "", status_code=202, response_model=RideOut,
    responses={
        **error_responses(401, 403, 409, 422),
        202: {"description": "The ride, as requested (or as it is now, for a repeat)",
              "headers": {
                  "Location": {"description": "The ride's URL", "schema": {"type": "string"}},
                  "Idempotent-Replayed": {
                      "description": "`true` when this answers a repeat of an earlier request",
                      "schema": {"type": "string", "enum": ["true"]}},
              },
              "links": {
                  name: {"operationId": op, "parameters": {"ride_id": "$response.body#/ride_id"},
                         "description": what}
                  for name, op, what in (
                      ("GetRide", "get_ride", "Follow the ride"),
                      ("GetRideEvents", "get_ride_events", "Its events, or a live stream"),
                      ("CancelRide", "cancel_ride", "Cancel it"))
              }},
    },
)
async def request_ride(
    body: RideIn,
    who: Rider,
    svc: Deps,
    response: Response,
    idempotency_key: Annotated[str | None, Header(
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Makes retries safe: a repeat with the same key and body returns the "
                    "same ride; the same key with another body is a 422. Keys are yours "
                    "alone (another rider's same key is another ride).")] = None,
) -> RideOut:
    """Ask for a ride. The saga starts at once; follow it with `GET /v1/rides/{id}` or
    its events. One at a time: while one of your rides has not ended, another request is
    a 409 naming it (`open_ride_id`)."""
    digest = _body_hash(body)
    replayed = False

    def work(session: Session) -> tuple[Ride, list[CloudEvent]]:
        nonlocal replayed
        serialise_rider(session, who.sub)
        if idempotency_key:
            seen = session.get(IdempotencyKey, (who.sub, idempotency_key))
            if seen is not None:
                if seen.request_hash != digest:
                    raise invalid("header.Idempotency-Key", "reused with another body",
                                  "This Idempotency-Key was used with a different body")
                ride = session.get(Ride, seen.ride_id)
                if ride is None:  # cannot happen: the key commits with its ride
                    raise Problem(409, "The ride of this Idempotency-Key is gone")
                replayed = True
                return ride, []
        unfinished = open_ride_of(session, who.sub)
        if unfinished is not None:
            raise Problem(409, f"You have a ride that has not ended: {unfinished.ride_id} "
                               f"({unfinished.status}); cancel it or wait for it to end",
                          open_ride_id=unfinished.ride_id)
        now = utcnow()
        if body.quote_id and live_quote(session, body.quote_id, who.sub, now) is None:
            raise invalid("body.quote_id", "no live quote",
                          "The quote is unknown, not yours or expired; request a new one")
        pickup, dropoff = body.pickup.point, body.dropoff.point
        ride = Ride(
            ride_id=uuid.uuid4().hex, rider_id=who.sub, status=RideStatus.REQUESTED,
            pickup_lat=pickup.lat, pickup_lng=pickup.lng,
            dropoff_lat=dropoff.lat, dropoff_lng=dropoff.lng,
            pickup_zone=zone_cell(pickup), payment_method=body.payment_method,
            quote_id=body.quote_id, created_at=now, updated_at=now,
        )
        session.add(ride)
        if idempotency_key:
            session.add(IdempotencyKey(rider_id=who.sub, key=idempotency_key,
                                       request_hash=digest, ride_id=ride.ride_id))
        event = new_event(
            "ride.requested",
            c.RideRequested(ride_id=ride.ride_id, rider_id=who.sub, pickup=pickup,
                            dropoff=dropoff, quote_id=body.quote_id,
                            payment_method=body.payment_method),
            source=SOURCE, subject=ride.ride_id, time=now,
        )
        return ride, [event]

    for attempt in range(1, IDEMPOTENT_TRIES + 1):
        try:
            ride = await svc.outbox.write(work)
            break
        except IntegrityError:
            # Only the key can collide (ride ids are random): a concurrent request with
            # the same key committed first. The next try finds its key and answers as a
            # repeat — or 422 if its body differed.
            if not idempotency_key or attempt == IDEMPOTENT_TRIES:
                raise Problem(409, "A concurrent request got in the way; retry") from None
    response.headers["Location"] = f"/v1/rides/{ride.ride_id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return RideOut.of(ride)


@router.get("", response_model=RidePage, responses=error_responses(401, 422))
async def list_rides(
    who: Caller,
    svc: Deps,
    status: Annotated[RideStatusName | None, Query(description="Only rides in this status")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size")] = 20,
    cursor: Annotated[str | None, Query(
        min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_=-]+$",
        description="`next_cursor` of the previous page")] = None,
) -> RidePage:
    """Your rides (a driver's: offered or assigned to them; an admin's: everyone's),
    newest first, a page at a time. The cursor is a position (creation time, then id),
    so rides requested while you page appear on no later page and none is skipped or
    repeated."""
    after = decode_cursor(cursor) if cursor else None

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
                    next_cursor=encode_cursor(rides[-1]) if more else None)


@router.get("/{ride_id}", response_model=RideOut, responses=error_responses(401, 404, 422))
async def get_ride(ride_id: RideId, who: Caller, svc: Deps) -> RideOut:
    """The ride as the read model has it (eventually consistent)."""
    return RideOut.of(await svc.db.read(lambda s: get_visible(s, ride_id, who)))


EVENTS_200: dict[str, Any] = {
    "description": "The ride's events. As JSON by default; with `Accept: text/event-stream`, "
                   "Server-Sent Events: the history, then new events as they are "
                   "published, until the ride ends (`id` = stream sequence, `event` = "
                   "type, `data` = the CloudEvent).",
    "content": {SSE: {"schema": {"type": "string"}}},
}


@router.get("/{ride_id}/events", response_model=RideEvents,
            responses={200: EVENTS_200, **error_responses(401, 404, 422, 429)})
async def get_ride_events(
    ride_id: RideId,
    who: Caller,
    svc: Deps,
    request: Request,
    last_event_id: Annotated[int, Header(
        ge=0, le=2**63 - 1,
        description="Event streams only: resume after this stream sequence (browsers "
                    "send it when they reconnect)")] = 0,
) -> Any:
    """The ride's CloudEvents in the order they were published, or a live stream of
    them."""
    await svc.db.read(lambda s: get_visible(s, ride_id, who))
    if wants_event_stream(request.headers.get("accept")):
        streams = request.app.state.streams

        async def ride_has_ended() -> bool:
            ride = await svc.db.read(lambda s: s.get(Ride, ride_id))
            return ride is not None and ride.status in FINAL

        return streams.response(
            "ride_events", ride_events(streams, ride_id, last_event_id, ride_has_ended),
            subject=who.sub)
    history = await ride_history(svc.js, ride_id)
    return RideEvents(events=[CloudEventOut.model_validate(e.model_dump(mode="json"))
                              for _, e in history])


# --- steering -----------------------------------------------------------------------------


async def _steer(
    svc: Deps, ride_id: str, who: Principal, event_type: str,
    decide: Callable[[Session, Ride], c.Payload],
) -> Accepted:
    """Check the caller may do this now (``decide`` raises 409 if not), then commit the
    event that tells the saga. The check and the event share a transaction."""

    def work(session: Session) -> tuple[Accepted, list[CloudEvent]]:
        ride = get_visible(session, ride_id, who)
        event = new_event(event_type, decide(session, ride), source=SOURCE, subject=ride_id)
        return Accepted(ride_id=ride_id, event_id=event.id), [event]

    # (No lock-free pre-check: the read model is updated where events are written, so a
    # report sent as soon as the previous event arrived is not refused as too early.)
    return await svc.outbox.write(work)


def _conflict(ride: Ride, action: str) -> Problem:
    return Problem(409, f"Cannot {action} a ride that is {ride.status}")


def _must_be_driver(who: Principal, verb: str) -> None:
    if who.role != "driver":
        raise Problem(403, f"Only a driver can {verb}; you are {who.role}")


def _must_be_assigned(ride: Ride, who: Principal, verb: str) -> None:
    # The driver can see the ride (it was offered to them) but it is not theirs now:
    # that is the ride's state, not the caller's role, so 409.
    if ride.driver_id != who.sub:
        raise Problem(409, f"Only the ride's assigned driver can {verb}, and you are not "
                           "assigned to it")


@router.post("/{ride_id}/cancel", status_code=202, response_model=Accepted,
             responses=error_responses(401, 404, 409, 422))
async def cancel_ride(ride_id: RideId, who: Caller, svc: Deps,
                      body: CancelIn | None = None) -> Accepted:
    """Cancel, as the ride's rider or its assigned driver (or an admin). A rider
    cancelling after assignment may owe the cancellation fee; a driver cancelling before
    the trip sends the ride back to matching; a trip in progress ends with `complete`
    (a driver's cancel is 409), and cancelling it otherwise charges the metered trip so
    far. The body is optional."""

    def decide(session: Session, ride: Ride) -> c.Payload:
        if who.role == "driver":
            _must_be_assigned(ride, who, "cancel it (decline the offer instead)")
        if ride.status in FINAL:
            raise _conflict(ride, "cancel")
        if ride.status == RideStatus.IN_PROGRESS:
            if who.role == "driver":
                raise Problem(409, "A trip in progress ends with POST "
                                   f"/v1/rides/{ride_id}/complete; a driver cannot cancel it")
            stop_meter(session, ride_id, utcnow())  # charged what it says so far
        return c.CancellationRequested(ride_id=ride_id, by_role=who.role, by_id=who.sub,
                                       reason=body.reason if body else None)

    return await _steer(svc, ride_id, who, "ride.cancellation_requested", decide)


_OFFERS_TO = (select(Offer).where(col(Offer.ride_id) == bindparam("ride_id"))
              .where(col(Offer.driver_id) == bindparam("driver_id")))


def _pending_offer(session: Session, ride: Ride, driver_id: str) -> Offer:
    offers = list(session.exec(_OFFERS_TO, params={"ride_id": ride.ride_id,
                                                   "driver_id": driver_id}))
    live = [o for o in offers if o.status == "pending" and o.expires_at > utcnow()]
    if not live:
        raise Problem(409, "You have no open offer for this ride (it expired or was answered)")
    return live[0]


def _answer(event_type: str, verb: str, outcome: str):  # type: ignore[no-untyped-def]
    async def answer(ride_id: RideId, who: Caller, svc: Deps) -> Accepted:
        _must_be_driver(who, f"{verb} a ride")

        def decide(session: Session, ride: Ride) -> c.Payload:
            offer = _pending_offer(session, ride, who.sub)
            # The answer is recorded with its event, conditionally: the saga's expiry of
            # the offer honours an answer given in time however late it hears of it,
            # and one of the two wins (CONTRACT.md section 5).
            if not transitions.close_offer(session, offer.offer_id, outcome):
                raise Problem(409, "You have no open offer for this ride (it expired or was "
                                   "answered)")
            return c.DriverAnswered(ride_id=ride_id, driver_id=who.sub, offer_id=offer.offer_id)

        return await _steer(svc, ride_id, who, event_type, decide)

    answer.__doc__ = (f"As the driver it is offered to, {verb} the ride while the offer is "
                      "open (409 once it expired or was answered).")
    return answer


def _report(event_type: str, verb: str, needs: str):  # type: ignore[no-untyped-def]
    async def report(ride_id: RideId, who: Caller, svc: Deps) -> Accepted:
        _must_be_driver(who, verb)

        def decide(session: Session, ride: Ride) -> c.Payload:
            _must_be_assigned(ride, who, verb)
            if ride.status != needs:
                raise _conflict(ride, verb)
            if event_type == "ride.trip_started":
                start_meter(session, ride_id, who.sub, utcnow())
            return c.DriverReported(ride_id=ride_id, driver_id=who.sub)

        return await _steer(svc, ride_id, who, event_type, decide)

    report.__doc__ = f"As the assigned driver, {verb} (the ride must be `{needs}`)."
    return report


for _path, _handler in (
    ("accept", _answer("ride.driver_accepted", "accept", "accepted")),
    ("decline", _answer("ride.driver_declined", "decline", "declined")),
    ("arrive", _report("ride.driver_arrived", "report arrival", RideStatus.DRIVER_ASSIGNED)),
    ("start", _report("ride.trip_started", "start the trip", RideStatus.DRIVER_ARRIVED)),
):
    router.add_api_route(f"/{{ride_id}}/{_path}", _handler, methods=["POST"], status_code=202,
                         response_model=Accepted, name=f"{_path}_ride",
                         responses=error_responses(401, 403, 404, 409, 422))


@router.post("/{ride_id}/complete", status_code=202, response_model=Accepted,
             responses=error_responses(401, 403, 404, 409, 422))
async def complete_ride(ride_id: RideId, body: TripReport, who: Caller, svc: Deps) -> Accepted:
    """As the assigned driver, end the trip with its distance and duration (the ride must
    be `in_progress`)."""
    _must_be_driver(who, "complete a trip")

    def decide(session: Session, ride: Ride) -> c.Payload:
        _must_be_assigned(ride, who, "complete the trip")
        if ride.status != RideStatus.IN_PROGRESS:
            raise _conflict(ride, "complete")
        stop_meter(session, ride_id, utcnow())
        return c.TripEnded(ride_id=ride_id, driver_id=who.sub, distance_m=body.distance_m,
                           duration_s=body.duration_s)

    return await _steer(svc, ride_id, who, "ride.trip_ended", decide)
