"""The saga's activities, one module per capability, pure rules beside the activity that
applies them. ``build_activities`` wires them to a process's database and outbox."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from activities.lifecycle import LifecycleActivities
from activities.matching import MatchingActivities
from activities.payments import PaymentActivities, SandboxGateway
from activities.pricing import PricingActivities
from domain.pricing import MAX_TRIP_KM
from events.outbox import Outbox
from store.db import Database


def build_activities(db: Database, outbox: Outbox,
                     max_trip_km: float = MAX_TRIP_KM) -> list[Callable[..., Any]]:
    pricing = PricingActivities(db)
    payments = PaymentActivities(db, outbox, SandboxGateway(), max_trip_km)
    matching = MatchingActivities(db, outbox)
    lifecycle = LifecycleActivities(outbox)
    return [
        pricing.quote_fare,
        payments.authorize_payment,
        payments.void_payment,
        payments.capture_payment,
        payments.refund_payment,
        payments.charge_cancellation_fee,
        matching.reserve_driver,
        matching.expire_offer,
        matching.decline_offer,
        matching.assign_driver,
        matching.release_driver,
        lifecycle.complete_ride,
        lifecycle.cancel_ride,
        lifecycle.fail_ride,
    ]
