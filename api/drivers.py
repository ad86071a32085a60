"""The driver app: profile, availability, location and offers.

Going online or offline and location pings are events (``driver.*``); the
driver-projector applies them to the ``drivers`` read model that matching searches.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import update
from sqlmodel import Session, col, select

from api.auth import Driver as DriverCaller
from api.problems import Problem, error_responses
from api.schemas import Coordinates, DriverOut, DriverProfileIn, OfferOut
from api.services import Deps
from api.streams import SSE, driver_offers, wants_event_stream
from domain.geo import driver_cell
from events import catalog as c
from events.envelope import CloudEvent, new_event
from store.meter import record_point
from store.tables import Driver, Offer, utcnow

router = APIRouter(prefix="/v1/drivers/me", tags=["drivers"])
SOURCE = "ridehail/api"
NO_PROFILE = "No driver profile yet; create it with PUT /v1/drivers/me"


class LocationAccepted(BaseModel):
    driver_id: str
    event_id: str = Field(description="The id of the `driver.location_updated` event")


def _driver(session: Session, driver_id: str) -> Driver:
    driver = session.get(Driver, driver_id)
    if driver is None:
        raise Problem(404, NO_PROFILE)
    return driver


@router.put("", response_model=DriverOut, responses=error_responses(401, 403, 422))
async def put_profile(body: DriverProfileIn, who: DriverCaller, svc: Deps) -> DriverOut:
    """Create or update your profile and vehicle (your id is your token's `sub`)."""

    def run(session: Session) -> Driver:
        driver = session.get(Driver, who.sub) or Driver(driver_id=who.sub)
        driver.name = body.name
        driver.vehicle_make = body.vehicle.make
        driver.vehicle_model = body.vehicle.model
        driver.vehicle_plate = body.vehicle.plate
        driver.updated_at = utcnow()
        session.add(driver)
        return driver

    return DriverOut.of(await svc.db.write(run))


@router.get("", response_model=DriverOut, responses=error_responses(401, 403, 404))
async def get_profile(who: DriverCaller, svc: Deps) -> DriverOut:
    """Your profile, status (`offline`, `available`, `reserved`, `on_trip`) and the ride
    you hold, if any."""
    return DriverOut.of(await svc.db.read(lambda s: _driver(s, who.sub)))


@router.post("/online", response_model=DriverOut, responses=error_responses(401, 403, 404, 422))
async def go_online(body: Coordinates, who: DriverCaller, svc: Deps) -> DriverOut:
    """Start taking rides from where you are."""
    at = body.point
    event = new_event("driver.online", c.DriverWentOnline(driver_id=who.sub, location=at),
                      source=SOURCE, subject=who.sub)

    def work(session: Session) -> tuple[Driver, list[CloudEvent]]:
        _driver(session, who.sub)  # 404 without a profile
        # Position and availability change here, with the event, so matching sees the
        # driver at once; a driver the saga holds (reserved, on a trip) keeps that status.
        session.exec(update(Driver).where(col(Driver.driver_id) == who.sub).values(
            lat=at.lat, lng=at.lng, h3_cell=driver_cell(at), updated_at=utcnow()))
        session.exec(update(Driver).where(col(Driver.driver_id) == who.sub)
                     .where(col(Driver.status) == "offline").values(status="available"))
        return _fresh(session, who.sub), [event]

    return DriverOut.of(await svc.outbox.write(work))


@router.post("/offline", response_model=DriverOut,
             responses=error_responses(401, 403, 404, 409))
async def go_offline(who: DriverCaller, svc: Deps) -> DriverOut:
    """Stop taking rides; not while you hold one (409)."""
    event = new_event("driver.offline", c.DriverWentOffline(driver_id=who.sub),
                      source=SOURCE, subject=who.sub)

    def work(session: Session) -> tuple[Driver, list[CloudEvent]]:
        _driver(session, who.sub)
        # Conditional, so it cannot undo a reservation made a moment ago: on PostgreSQL
        # the update waits for the reserving transaction and then matches nothing.
        went = session.exec(update(Driver).where(col(Driver.driver_id) == who.sub)
                            .where(col(Driver.status).in_(("available", "offline")))
                            .values(status="offline", updated_at=utcnow()))
        driver = _fresh(session, who.sub)
        if went.rowcount != 1:
            raise Problem(409, f"You are {driver.status} for ride {driver.ride_id}; finish or "
                               "cancel it before going offline")
        return driver, [event]

    return DriverOut.of(await svc.outbox.write(work))


def _fresh(session: Session, driver_id: str) -> Driver:
    driver = session.get(Driver, driver_id, populate_existing=True)
    assert driver is not None
    return driver


@router.post("/location", status_code=202, response_model=LocationAccepted,
             responses=error_responses(401, 403, 404, 422))
async def update_location(body: Coordinates, who: DriverCaller, svc: Deps) -> LocationAccepted:
    """Report where you are (drives matching; during a trip, the trip meter the final
    fare is checked against)."""
    event = new_event("driver.location_updated",
                      c.DriverLocationUpdated(driver_id=who.sub, location=body.point),
                      source=SOURCE, subject=who.sub)

    def work(session: Session) -> tuple[LocationAccepted, list[CloudEvent]]:
        record_point(session, _driver(session, who.sub), body.point)
        return LocationAccepted(driver_id=who.sub, event_id=event.id), [event]

    return await svc.outbox.write(work)


OFFERS_200: dict[str, Any] = {
    "description": "Your pending offers. As JSON by default; with `Accept: "
                   "text/event-stream`, Server-Sent Events: one `offer` event (`data` = "
                   "the offer) for each pending offer, then for each new one as it is "
                   "made, until you disconnect.",
    "content": {SSE: {"schema": {"type": "string"}}},
}


def _pending(session: Session, driver_id: str) -> list[OfferOut]:
    return [OfferOut.of(o) for o in session.exec(
        select(Offer).where(Offer.driver_id == driver_id).where(Offer.status == "pending")
        .where(col(Offer.expires_at) > utcnow()).order_by(col(Offer.created_at)))]


def _open_offer(session: Session, driver_id: str, offer_id: str) -> OfferOut | None:
    offer = session.get(Offer, offer_id)
    if (offer is None or offer.driver_id != driver_id or offer.status != "pending"
            or offer.expires_at <= utcnow()):
        return None
    return OfferOut.of(offer)


@router.get("/offers", response_model=list[OfferOut],
            responses={200: OFFERS_200, **error_responses(401, 403, 429)})
async def pending_offers(who: DriverCaller, svc: Deps, request: Request) -> Any:
    """Rides offered to you that you can still accept or decline, oldest first; or a live
    stream of them."""
    if wants_event_stream(request.headers.get("accept")):

        async def pending() -> list[OfferOut]:
            return await svc.db.read(lambda s: _pending(s, who.sub))

        async def offer(offer_id: str) -> OfferOut | None:
            return await svc.db.read(lambda s: _open_offer(s, who.sub, offer_id))

        streams = request.app.state.streams
        return streams.response("driver_offers", driver_offers(streams, who.sub, pending, offer),
                                subject=who.sub)
    return await svc.db.read(lambda s: _pending(s, who.sub))
