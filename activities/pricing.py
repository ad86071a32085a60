"""The pricing activity: the ride's fare from its live quote, or priced now.

The rules are in ``domain.pricing``, quotes and zone surge in
``store.quotes``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, datetime

from sqlmodel import Session
from temporalio import activity

from domain.geo import Point
from store.db import Database
from store.quotes import live_quote, price, quote_covers
from store.tables import Ride
from workflows import types as wt
from workflows.contract import Step
from workflows.types import FareQuote, QuoteRequest

log = logging.getLogger(__name__)


def map_point(p: wt.Point | Point) -> Point:
    """The boundary type of a point (``workflows.types.Point``) as the one ``domain.geo``
    computes with."""
    return p if isinstance(p, Point) else Point(lat=p.lat, lng=p.lng)


def _requested_at(session: Session, ride_id: str) -> datetime:
    """When the ride was requested, as its row says: for a ride whose workflow did not
    pass it (started before ``QuoteRequest.requested_at``); now, for a ride the read
    model does not know."""
    ride = session.get(Ride, ride_id)
    return ride.created_at if ride else datetime.now(UTC)


class PricingActivities:
    def __init__(self, db: Database) -> None:
        self.db = db

    @activity.defn(name=Step.QUOTE_FARE)
    async def quote_fare(self, req: QuoteRequest) -> FareQuote:
        """The ride's price: its live quote if it was requested with one, else priced now."""

        pickup, dropoff = map_point(req.pickup), map_point(req.dropoff)

        def run(session: Session) -> FareQuote:
            if req.quote_id:
                # the quote must have been live when the ride was requested (the api
                # checked that), however long the saga took to get here
                requested_at = req.requested_at or _requested_at(session, req.ride_id)
                quote = live_quote(session, req.quote_id, req.rider_id, requested_at)
                if quote is not None and quote_covers(quote, pickup, dropoff):
                    return FareQuote(
                        fare_cents=quote.fare_cents,
                        currency=quote.currency,
                        surge_multiplier=quote.surge_multiplier,
                        distance_m=quote.distance_m,
                        duration_s=quote.duration_s,
                        quote_id=quote.quote_id,
                    )
                log.warning(
                    "ride %s: quote %s is not live or not for this trip; pricing afresh",
                    req.ride_id,
                    req.quote_id,
                )
            return FareQuote(**asdict(price(session, pickup, dropoff, exclude_ride=req.ride_id)))

        return await self.db.read(run)
