"""The driver app: profile, availability, location and offers.

Going online or offline and location pings are events (``driver.*``); the
driver-projector applies them to the ``drivers`` read model that matching searches.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlmodel import Session, col, select

from api.auth import Driver as DriverCaller
from api.problems import Problem, error_responses
from api.schemas import DriverOut, DriverProfileIn, LocationIn, OfferOut
from api.services import Deps
from events import catalog as c
from events.envelope import CloudEvent, new_event
from ridehail.geo import Point
from ridehail.tables import Driver, Offer, utcnow

router = APIRouter(prefix="/v1/drivers/me", tags=["drivers"])
SOURCE = "ridehail/api"
NO_PROFILE = "No driver profile yet; create it with PUT /v1/drivers/me"


def _driver(session: Session, driver_id: str) -> Driver:
    driver = session.get(Driver, driver_id)
    if driver is None:
        raise Problem(404, NO_PROFILE)
    return driver


@router.put("", response_model=DriverOut, responses=error_responses(401, 403, 422))
async def put_profile(body: DriverProfileIn, who: DriverCaller, svc: Deps) -> DriverOut:
    """Create or update your profile and vehicle."""

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
    """Your profile, status (`offline`, `available`, `reserved`, `on_trip`) and ride."""
    return DriverOut.of(await svc.db.read(lambda s: _driver(s, who.sub)))


async def _publish(svc: Deps, event: CloudEvent, check=None) -> None:  # type: ignore[no-untyped-def]
    def work(session: Session) -> tuple[None, list[CloudEvent]]:
        if check is not None:
            check(session)
        return None, [event]

    await svc.outbox.write(work)


@router.post("/online", response_model=DriverOut, responses=error_responses(401, 403, 404, 422))
async def go_online(body: LocationIn, who: DriverCaller, svc: Deps) -> DriverOut:
    """Start taking rides from where you are."""
    at = Point(lat=body.lat, lng=body.lng)
    event = new_event("driver.online", c.DriverWentOnline(driver_id=who.sub, location=at),
                      source=SOURCE, subject=who.sub)

    def work(session: Session) -> tuple[Driver, list[CloudEvent]]:
        return _driver(session, who.sub), [event]

    driver = await svc.outbox.write(work)
    out = DriverOut.of(driver)
    if out.status == "offline":  # what the driver-projector is about to apply
        out.status = "available"
    return out.model_copy(update={"location": at})


@router.post("/offline", response_model=DriverOut,
             responses=error_responses(401, 403, 404, 409))
async def go_offline(who: DriverCaller, svc: Deps) -> DriverOut:
    """Stop taking rides; not while you hold one (409)."""
    event = new_event("driver.offline", c.DriverWentOffline(driver_id=who.sub),
                      source=SOURCE, subject=who.sub)

    def work(session: Session) -> tuple[Driver, list[CloudEvent]]:
        driver = _driver(session, who.sub)
        if driver.status in ("reserved", "on_trip"):
            raise Problem(409, f"You are {driver.status} for ride {driver.ride_id}; finish or "
                               "cancel it before going offline")
        return driver, [event]

    driver = await svc.outbox.write(work)
    return DriverOut.of(driver).model_copy(update={"status": "offline"})


@router.post("/location", status_code=202, response_model=None,
             responses={**error_responses(401, 403, 404, 422), 202: {"description": "Accepted"}})
async def update_location(body: LocationIn, who: DriverCaller, svc: Deps) -> Response:
    """Report where you are (drives matching)."""
    at = Point(lat=body.lat, lng=body.lng)
    event = new_event("driver.location_updated",
                      c.DriverLocationUpdated(driver_id=who.sub, location=at),
                      source=SOURCE, subject=who.sub)
    await _publish(svc, event, lambda s: _driver(s, who.sub))
    return Response(status_code=202)


@router.get("/offers", response_model=list[OfferOut], responses=error_responses(401, 403))
async def pending_offers(who: DriverCaller, svc: Deps) -> list[OfferOut]:
    """Rides offered to you that you can still accept or decline."""

    def run(session: Session) -> list[Offer]:
        return list(session.exec(
            select(Offer).where(Offer.driver_id == who.sub).where(Offer.status == "pending")
            .where(col(Offer.expires_at) > utcnow()).order_by(col(Offer.created_at))))

    return [OfferOut.of(o) for o in await svc.db.read(run)]
