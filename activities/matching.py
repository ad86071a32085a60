"""Matching: find the nearest available drivers by H3 cell and reserve one atomically.

Drivers are indexed by their resolution-8 cell (``drivers.h3_cell``, kept from their
location pings). The search widens in k-rings around the pickup and ranks what it finds
by straight-line distance. A driver is reserved with a conditional update
(``status = 'available'`` → ``'reserved'``), which is atomic on SQLite (the transaction
holds the write lock) and on PostgreSQL (the row lock makes a second update see the
first's result and match nothing), so two rides can never hold one driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import h3
from sqlalchemy import bindparam
from sqlmodel import Session, col, select
from temporalio import activity

from activities.facts import fact
from activities.pricing import map_point
from domain.geo import Point, driver_cell
from domain.matching import Located, rank_candidates
from domain.money import to_decimal
from events.catalog import DriverAssigned, DriverOffered, DriverReleased, OfferExpired
from events.envelope import CloudEvent
from events.outbox import Outbox
from store import transitions
from store.db import Database
from store.tables import Driver, Offer, utcnow
from workflows.contract import Step
from workflows.types import OfferClosed, OfferMade, OfferRef, ReleaseRequest, ReserveRequest

# The answers the api records on an offer with the driver's event.
ANSWERS = ("accepted", "declined")

# k-rings of resolution-8 cells searched in turn: ~0.5, 1.5, 3, 5 and 8 km around pickup.
SEARCH_RINGS = (1, 3, 6, 10, 16)
CANDIDATES_PER_RING = 20


# Built once (every offer runs it, ring by ring): the cells and the excluded are bound.
_AVAILABLE_IN_CELLS = (
    select(Driver.driver_id, Driver.lat, Driver.lng)
    .where(Driver.status == "available")
    .where(col(Driver.h3_cell).in_(bindparam("cells", expanding=True)))
    .where(col(Driver.driver_id).not_in(bindparam("exclude", expanding=True)))
)


def nearby_available(session: Session, pickup: Point, exclude: Sequence[str]
                     ) -> list[Located]:
    """Available drivers in the smallest k-ring around the pickup that has any, nearest
    first (their ids and positions: nothing else of a driver is needed to rank them)."""
    origin = driver_cell(pickup)
    for k in SEARCH_RINGS:
        rows = session.exec(_AVAILABLE_IN_CELLS, params={
            "cells": h3.grid_disk(origin, k), "exclude": list(exclude)})
        found: list[Located] = list(rows)  # type: ignore[arg-type]  # named Rows, typed as tuples
        if found:
            return rank_candidates(pickup, found)[:CANDIDATES_PER_RING]
    return []


def reserve_nearest(
    session: Session, req: ReserveRequest, offer_id: str, now: datetime
) -> Offer | None:
    """Reserve the nearest available driver (not in ``req.exclude``) and record the offer
    made to them; None when nobody nearby is free. Runs in the caller's write
    transaction. A second call for the same offer id returns the first call's offer, so a
    retried activity never reserves a second driver."""
    existing = session.get(Offer, offer_id)
    if existing is not None:
        return existing
    pickup = map_point(req.pickup)
    for driver in nearby_available(session, pickup, req.exclude):
        # another ride may have taken this driver since the search: try the next one
        if not transitions.reserve(session, driver.driver_id, req.ride_id, utcnow()):
            continue
        offer = Offer(
            offer_id=offer_id,
            ride_id=req.ride_id,
            driver_id=driver.driver_id,
            pickup_lat=req.pickup.lat,
            pickup_lng=req.pickup.lng,
            dropoff_lat=req.dropoff.lat,
            dropoff_lng=req.dropoff.lng,
            fare_cents=req.fare_cents,
            currency=req.currency,
            expires_at=now + timedelta(seconds=req.offer_timeout_s),
            created_at=now,
        )
        session.add(offer)
        return offer
    return None


class MatchingActivities:
    def __init__(self, db: Database, outbox: Outbox) -> None:
        self.db = db
        self.outbox = outbox

    @activity.defn(name=Step.RESERVE_DRIVER)
    async def reserve_driver(self, req: ReserveRequest) -> OfferMade | None:
        """Reserve the nearest available driver and offer them the ride; None when no
        driver is free nearby."""
        offer_id = f"{req.ride_id}:{req.attempt}"  # derived: the same on every retry

        def run(session: Session) -> tuple[OfferMade | None, list[CloudEvent]]:
            offer = reserve_nearest(session, req, offer_id, utcnow())
            if offer is None:
                return None, []
            # on a retry this is the first attempt's event again, which the outbox drops
            event = fact(
                "ride.driver_offered",
                req.ride_id,
                f"offer:{offer_id}",
                DriverOffered(
                    ride_id=req.ride_id,
                    driver_id=offer.driver_id,
                    offer_id=offer_id,
                    fare=to_decimal(req.fare_cents),
                    currency=req.currency,
                    expires_at=offer.expires_at.isoformat(),
                ),
            )
            return OfferMade(
                offer_id=offer_id, driver_id=offer.driver_id, expires_at=offer.expires_at
            ), [event]

        return await self.outbox.write(run)

    @activity.defn(name=Step.ASSIGN_DRIVER)
    async def assign_driver(self, ref: OfferRef) -> None:
        def run(session: Session) -> tuple[None, list[CloudEvent]]:
            offer = session.get(Offer, ref.offer_id)
            if offer is not None and offer.status == "pending":
                offer.status = "accepted"
            event = fact(
                "ride.driver_assigned",
                ref.ride_id,
                f"assign:{ref.offer_id}",
                DriverAssigned(ride_id=ref.ride_id, driver_id=ref.driver_id),
            )
            return None, [event]

        await self.outbox.write(run)

    @activity.defn(name=Step.EXPIRE_OFFER)
    async def expire_offer(self, ref: OfferRef) -> OfferClosed:
        """Expire the offer and free the driver — unless ``ref.honour_answer`` and the
        driver answered in time: then nothing changes, and the answer is returned."""
        return await self._close_offer(ref, "expired")

    @activity.defn(name=Step.DECLINE_OFFER)
    async def decline_offer(self, ref: OfferRef) -> OfferClosed:
        return await self._close_offer(ref, "declined")

    async def _close_offer(self, ref: OfferRef, outcome: str) -> OfferClosed:
        """Close the offer and free the driver for other rides."""

        def run(session: Session) -> tuple[OfferClosed, list[CloudEvent]]:
            # conditional: the api records an answer the same way, and one of the two wins
            transitions.close_offer(session, ref.offer_id, outcome)
            offer = session.get(Offer, ref.offer_id, populate_existing=True)
            if ref.honour_answer and offer is not None and offer.status in ANSWERS:
                return OfferClosed(outcome=offer.status), []  # answered in time
            events = []
            if outcome == "expired":
                events.append(
                    fact(
                        "ride.offer_expired",
                        ref.ride_id,
                        f"offer:{ref.offer_id}:expired",
                        OfferExpired(
                            ride_id=ref.ride_id, driver_id=ref.driver_id, offer_id=ref.offer_id
                        ),
                    )
                )
            if transitions.free(session, ref.driver_id, ref.ride_id, utcnow()):
                events.append(
                    fact(
                        "ride.driver_released",
                        ref.ride_id,
                        f"offer:{ref.offer_id}:released",
                        DriverReleased(
                            ride_id=ref.ride_id, driver_id=ref.driver_id, reason=f"offer_{outcome}"
                        ),
                    )
                )
            return OfferClosed(outcome=outcome), events

        return await self.outbox.write(run)

    @activity.defn(name=Step.RELEASE_DRIVER)
    async def release_driver(self, req: ReleaseRequest) -> str | None:
        """Free whichever driver the ride holds (and withdraw a pending offer); returns the
        driver's id, or None when the ride held nobody."""

        def run(session: Session) -> tuple[str | None, list[CloudEvent]]:
            for offer in session.exec(
                select(Offer).where(Offer.ride_id == req.ride_id).where(Offer.status == "pending")
            ):
                offer.status = "withdrawn"
            driver = session.exec(select(Driver).where(Driver.ride_id == req.ride_id)).first()
            if driver is None or not transitions.free(session, driver.driver_id, req.ride_id,
                                                      utcnow()):
                return None, []
            event = fact(
                "ride.driver_released",
                req.ride_id,
                f"release:{req.step}",
                DriverReleased(ride_id=req.ride_id, driver_id=driver.driver_id, reason=req.reason),
            )
            return driver.driver_id, [event]

        return await self.outbox.write(run)
