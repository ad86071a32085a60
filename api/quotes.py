"""``POST /v1/quotes``: price a trip before requesting it."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from sqlmodel import Session

from api.auth import Rider
from api.problems import error_responses
from api.schemas import QuoteIn, QuoteOut
from api.services import Deps
from api.trip_rules import check_trip
from domain.money import fmt
from store.quotes import make_quote
from store.tables import Quote

router = APIRouter(prefix="/v1", tags=["rides"])


@router.post("/quotes", status_code=201, response_model=QuoteOut,
             responses=error_responses(401, 403, 422))
async def create_quote(body: QuoteIn, who: Rider, svc: Deps) -> QuoteOut:
    """A priced quote (fare, surge, distance and duration); request a ride with its
    `quote_id` before `expires_at` to keep the price. Pickup and dropoff must be inside
    the service area, at least 100 m and at most the longest trip apart (else 422)."""
    check_trip(svc.settings, body.pickup.point, body.dropoff.point)

    def run(session: Session) -> Quote:
        return make_quote(session, who.sub, body.pickup.point, body.dropoff.point,
                          quote_id=str(uuid.uuid4()))

    q = await svc.db.write(run)
    return QuoteOut(quote_id=q.quote_id, fare=fmt(q.fare_cents) or "0.00", currency=q.currency,
                    surge_multiplier=q.surge_multiplier, distance_m=q.distance_m,
                    duration_s=q.duration_s, expires_at=q.expires_at)
