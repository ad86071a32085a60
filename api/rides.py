"""Rides: request, read, follow and steer them.

A request or a driver's report is a state change plus an event, committed together
through the outbox; the saga reacts to the event. The rules of requesting a ride are in
``api.booking``, and here is how they are answered. A ride is visible to its rider, to a
driver it was offered or assigned to, and to admins; to anyone else it does not exist
(404, never 403, so ride ids cannot be probed). Checks run in this order: the token
(401), the role (403), visibility (404), then whether the caller may do this to the ride
as it is now (409).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from sqlalchemy import bindparam, or_
from sqlmodel import Session, col, select

from api import booking
from api.auth import Caller, Principal, Rider
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
from api.trip_rules import check_trip, check_trip_report
from domain.status import FINAL, RideStatus
from events import catalog as c
from events.envelope import CloudEvent, new_event
from events.log import read_ride
from store import transitions
from store.meter import start_meter, stop_meter
from store.tables import Offer, Ride, utcnow

router = APIRouter(prefix="/v1/rides", tags=["rides"])
SOURCE = "ridehail/api"

RideId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN,
                             description="The ride's id",
                             examples=["9b1deb4d3b7d4bad9bdd2b0d7b3dcb6d"])]
# Printable ASCII: the key is stored and compared byte for byte.
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"


# --- request and read -------------------------------------------------------------------


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
    a 409 naming it (`open_ride_id`). Pickup and dropoff must be inside the service
    area, at least 100 m and at most the longest trip apart (else 422)."""
    check_trip(svc.settings, body.pickup.point, body.dropoff.point)
    try:
        booked = await booking.book_ride(svc.outbox, who.sub, body, idempotency_key)
    except booking.Refused as refused:
        raise _refusal(refused) from None
    response.headers["Location"] = f"/v1/rides/{booked.ride.ride_id}"
    if booked.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return RideOut.of(booked.ride)


def _refusal(refused: booking.Refused) -> Problem:
    """The problem that answers a ride request the rules turned down."""
    match refused:
        case booking.KeyReused():
            return invalid("header.Idempotency-Key", "reused with another body",
                           "This Idempotency-Key was used with a different body")
        case booking.RideStillOpen(ride_id=ride_id, status=status):
            return Problem(409, f"You have a ride that has not ended: {ride_id} ({status}); "
                                "cancel it or wait for it to end", open_ride_id=ride_id)
        case booking.QuoteNotLive():
            return invalid("body.quote_id", "no live quote",
                           "The quote is unknown, not yours or expired; request a new one")
        case booking.KeyWithoutRide():
            return Problem(409, "The ride of this Idempotency-Key is gone")
        case booking.Contended():
            return Problem(409, "A concurrent request got in the way; retry")
    raise TypeError(f"no answer for {refused!r}")  # each kind of refusal has its case


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
                   "published, until the ride ends (`id` = the event's position in the "
                   "ride's event log, `event` = type, `data` = the CloudEvent).",
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
        description="Event streams only: resume after the event of this position (an "
                    "event's `id`; browsers send it when they reconnect)")] = 0,
) -> Any:
    """The ride's CloudEvents in the order they were committed (its whole history, kept
    in the database), or a live stream of them."""
    await svc.db.read(lambda s: get_visible(s, ride_id, who))
    if wants_event_stream(request.headers.get("accept")):
        streams = request.app.state.streams
        return streams.response("ride_events", ride_events(streams, ride_id, last_event_id),
                                subject=who.sub)
    history = await read_ride(svc.db, ride_id)
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


async def _answer_offer(svc: Deps, ride_id: str, who: Principal, event_type: str,
                        verb: str, outcome: str) -> Accepted:
    """The offered driver's answer (``verb``: accept or decline): it closes their open
    offer as ``outcome`` and tells the saga with ``event_type``."""
    _must_be_driver(who, f"{verb} a ride")

    def decide(session: Session, ride: Ride) -> c.Payload:
        offer = _pending_offer(session, ride, who.sub)
        # The answer is recorded with its event, conditionally: the saga's expiry of the
        # offer honours an answer given in time however late it hears of it, and one of
        # the two wins (CONTRACT.md section 5).
        if not transitions.close_offer(session, offer.offer_id, outcome):
            raise Problem(409, "You have no open offer for this ride (it expired or was "
                               "answered)")
        return c.DriverAnswered(ride_id=ride_id, driver_id=who.sub, offer_id=offer.offer_id)

    return await _steer(svc, ride_id, who, event_type, decide)


def _driver_report(ride: Ride, who: Principal, verb: str, needs: RideStatus) -> c.Payload:
    """The assigned driver's report on ``ride`` (``verb``: what they report), which must
    be ``needs`` now."""
    _must_be_assigned(ride, who, verb)
    if ride.status != needs:
        raise _conflict(ride, verb)
    return c.DriverReported(ride_id=ride.ride_id, driver_id=who.sub)


# A route's docstring is its description in the OpenAPI document: the backslashes keep
# the next two on one line there.
@router.post("/{ride_id}/accept", status_code=202, response_model=Accepted,
             responses=error_responses(401, 403, 404, 409, 422))
async def accept_ride(ride_id: RideId, who: Caller, svc: Deps) -> Accepted:
    """As the driver it is offered to, accept the ride while the offer is open (409 \
once it expired or was answered)."""
    return await _answer_offer(svc, ride_id, who, "ride.driver_accepted", "accept", "accepted")


@router.post("/{ride_id}/decline", status_code=202, response_model=Accepted,
             responses=error_responses(401, 403, 404, 409, 422))
async def decline_ride(ride_id: RideId, who: Caller, svc: Deps) -> Accepted:
    """As the driver it is offered to, decline the ride while the offer is open (409 \
once it expired or was answered)."""
    return await _answer_offer(svc, ride_id, who, "ride.driver_declined", "decline", "declined")


@router.post("/{ride_id}/arrive", status_code=202, response_model=Accepted,
             responses=error_responses(401, 403, 404, 409, 422))
async def arrive_ride(ride_id: RideId, who: Caller, svc: Deps) -> Accepted:
    """As the assigned driver, report arrival (the ride must be `driver_assigned`)."""
    _must_be_driver(who, "report arrival")

    def decide(session: Session, ride: Ride) -> c.Payload:
        return _driver_report(ride, who, "report arrival", RideStatus.DRIVER_ASSIGNED)

    return await _steer(svc, ride_id, who, "ride.driver_arrived", decide)


@router.post("/{ride_id}/start", status_code=202, response_model=Accepted,
             responses=error_responses(401, 403, 404, 409, 422))
async def start_ride(ride_id: RideId, who: Caller, svc: Deps) -> Accepted:
    """As the assigned driver, start the trip (the ride must be `driver_arrived`)."""
    _must_be_driver(who, "start the trip")

    def decide(session: Session, ride: Ride) -> c.Payload:
        report = _driver_report(ride, who, "start the trip", RideStatus.DRIVER_ARRIVED)
        start_meter(session, ride_id, who.sub, utcnow())  # the trip meter runs from now
        return report

    return await _steer(svc, ride_id, who, "ride.trip_started", decide)


@router.post("/{ride_id}/complete", status_code=202, response_model=Accepted,
             responses=error_responses(401, 403, 404, 409, 422))
async def complete_ride(ride_id: RideId, body: TripReport, who: Caller, svc: Deps) -> Accepted:
    """As the assigned driver, end the trip with its distance and duration (the ride must
    be `in_progress`; a distance longer than the longest trip may be driven, twice
    `RIDEHAIL_MAX_TRIP_KM`, is a 422)."""
    _must_be_driver(who, "complete a trip")

    def decide(session: Session, ride: Ride) -> c.Payload:
        _must_be_assigned(ride, who, "complete the trip")
        if ride.status != RideStatus.IN_PROGRESS:
            raise _conflict(ride, "complete")
        check_trip_report(svc.settings, body.distance_m)
        stop_meter(session, ride_id, utcnow())
        return c.TripEnded(ride_id=ride_id, driver_id=who.sub, distance_m=body.distance_m,
                           duration_s=body.duration_s)

    return await _steer(svc, ride_id, who, "ride.trip_ended", decide)
