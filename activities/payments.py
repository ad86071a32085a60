"""Payments: a ledger of authorize / capture / void / refund entries behind a gateway.

Every ledger entry carries an idempotency key derived from the workflow id and the saga
step, so a retried or replayed activity finds its earlier entry instead of moving money
twice. A hold is settled once — captured (the fare or the cancellation fee) or voided —
and both outcomes share the key ``ride-<id>:settle``, so the unique index on the key
makes "a voided hold has no capture" and "at most one capture" hold even when a
compensation races a step that is still running.

The built-in gateway is a sandbox: ``payment_method="card_declined"`` is refused (a
business failure, never retried) and ``"card_flaky"`` fails twice with a transient error
before it succeeds, so both paths can be exercised end to end. A token not of the
gateway's format (``domain.payments.PAYMENT_METHOD_PATTERN``; the API refuses one at the
door) is declined.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.facts import fact, step_key
from domain.meter import Figures, settle_trip, trip_so_far
from domain.money import to_decimal
from domain.payments import (
    cancellation_fee_cents,
    final_charge_cents,
    hold_cents,
    is_payment_method,
)
from domain.pricing import MAX_TRIP_KM
from events.catalog import PaymentAuthorized, PaymentDeclined, PaymentMoved
from events.envelope import CloudEvent
from events.outbox import Outbox
from store.db import Database
from store.meter import read_meter
from store.tables import LedgerEntry
from workflows.contract import PAYMENT_DECLINED, Step  # a declined card is never retried
from workflows.types import (
    Authorization,
    AuthorizeRequest,
    Capture,
    CaptureRequest,
    FareAdjustment,
    FeeRequest,
    SettleRequest,
    TripFigures,
)

# ledger entry kinds
AUTHORIZE, CAPTURE, VOID, REFUND = "authorize", "capture", "void", "refund"


# --- gateway ----------------------------------------------------------------------------


class Declined(Exception):
    pass


class GatewayUnavailable(Exception):
    pass


class SandboxGateway:
    """Stands in for a card processor; references are derived from the idempotency key."""

    FLAKY_FAILURES = 2

    def authorize(self, payment_method: str, amount_cents: int, key: str, attempt: int) -> str:
        if not is_payment_method(payment_method):
            raise Declined(f"{payment_method!r} is not a payment method token")
        if payment_method == "card_declined":
            raise Declined("the card was declined by the issuer")
        if payment_method == "card_flaky" and attempt <= self.FLAKY_FAILURES:
            raise GatewayUnavailable(f"payment gateway timed out (attempt {attempt})")
        return f"auth_{key}"

    def capture(self, auth_ref: str, amount_cents: int, key: str) -> str:
        return f"cap_{key}"

    def void(self, auth_ref: str, key: str) -> str:
        return f"void_{key}"

    def refund(self, capture_ref: str, amount_cents: int, key: str) -> str:
        return f"refund_{key}"


# --- activities ---------------------------------------------------------------------------


def ledger(session: Session, ride_id: str) -> list[LedgerEntry]:
    """The ride's ledger entries, oldest first."""
    q = (select(LedgerEntry).where(col(LedgerEntry.ride_id) == ride_id)
         .order_by(col(LedgerEntry.id)))
    return list(session.exec(q))


def metered_trip(session: Session, req: CaptureRequest
                 ) -> tuple[TripFigures, FareAdjustment | None]:
    """The trip to charge for, from the trip meter and the trip's event times: the
    driver's figures where they agree with the meter, the meter's where they do not (or
    the trip so far, for a trip cut short by a cancellation)."""
    meter = read_meter(session, req.ride_id)
    metered_m, points = (meter.distance_m, meter.points) if meter else (0.0, 0)
    elapsed = (req.ended_at - req.started_at).total_seconds() \
        if req.started_at and req.ended_at else float(req.duration_s)
    if req.cut_short:
        f = trip_so_far(metered_m, elapsed)
        used = TripFigures(distance_m=f.distance_m, duration_s=f.duration_s)
        return used, FareAdjustment(reason="cancelled during the trip: charged the metered "
                                           "trip so far", reported=None, used=used)
    reported = TripFigures(distance_m=req.distance_m, duration_s=req.duration_s)
    settled = settle_trip(Figures(req.distance_m, req.duration_s), metered_m, points,
                          elapsed, req.quote.distance_m)
    used = TripFigures(distance_m=settled.used.distance_m, duration_s=settled.used.duration_s)
    if settled.reason is None:
        return used, None
    return used, FareAdjustment(reason=settled.reason, reported=reported, used=used)


def _first(entries: list[LedgerEntry], kind: str) -> LedgerEntry | None:
    return next((e for e in entries if e.kind == kind), None)


def _record(session: Session, ride_id: str, kind: str, amount_cents: int, currency: str,
            key: str, gateway_ref: str, event_type: str, purpose: str) -> CloudEvent:
    """Add a ledger entry and return the fact that reports it (same transaction)."""
    session.add(LedgerEntry(ride_id=ride_id, kind=kind, amount_cents=amount_cents,
                            currency=currency, idempotency_key=key, gateway_ref=gateway_ref))
    return fact(event_type, ride_id, kind, PaymentMoved(
        ride_id=ride_id, amount=to_decimal(amount_cents), currency=currency, purpose=purpose))


class PaymentActivities:
    def __init__(self, db: Database, outbox: Outbox, gateway: SandboxGateway,
                 max_trip_km: float = MAX_TRIP_KM) -> None:
        self.db = db
        self.outbox = outbox
        self.gateway = gateway
        self.max_trip_km = max_trip_km  # RIDEHAIL_MAX_TRIP_KM: it caps the hold

    @activity.defn(name=Step.AUTHORIZE_PAYMENT)
    async def authorize_payment(self, req: AuthorizeRequest) -> Authorization:
        """Place the hold. A declined card raises a non-retryable PaymentDeclined; a
        gateway outage raises an ordinary error, which Temporal retries with backoff."""
        key = step_key(AUTHORIZE)
        amount = hold_cents(req.quote.fare_cents, self.max_trip_km)
        currency = req.quote.currency
        existing = await self.db.read(lambda s: _first(ledger(s, req.ride_id), AUTHORIZE))
        if existing is not None:  # a retry whose first attempt went through
            return Authorization(amount_cents=existing.amount_cents, currency=existing.currency)
        try:
            ref = self.gateway.authorize(req.payment_method, amount, key, activity.info().attempt)
        except Declined as e:
            declined = fact(
                "ride.payment_declined",
                req.ride_id,
                AUTHORIZE,
                PaymentDeclined(
                    ride_id=req.ride_id, amount=to_decimal(amount), currency=currency, reason=str(e)
                ),
            )
            await self.outbox.write(lambda s: (None, [declined]))
            raise ApplicationError(str(e), type=PAYMENT_DECLINED, non_retryable=True) from e

        event = fact(
            "ride.payment_authorized",
            req.ride_id,
            AUTHORIZE,
            PaymentAuthorized(
                ride_id=req.ride_id,
                amount=to_decimal(amount),
                currency=currency,
                quoted_fare=to_decimal(req.quote.fare_cents),
                surge_multiplier=req.quote.surge_multiplier,
            ),
        )

        def record(session: Session) -> tuple[None, list[CloudEvent]]:
            session.add(
                LedgerEntry(
                    ride_id=req.ride_id,
                    kind=AUTHORIZE,
                    amount_cents=amount,
                    currency=currency,
                    idempotency_key=key,
                    gateway_ref=ref,
                )
            )
            return None, [event]

        await self.outbox.write(record)
        return Authorization(amount_cents=amount, currency=currency)

    @activity.defn(name=Step.CAPTURE_PAYMENT)
    async def capture_payment(self, req: CaptureRequest) -> Capture:
        """Capture the final fare (at the quoted surge, never above the hold). A metered
        request is charged for the trip ``metered_trip`` says; otherwise (rides started
        before the meter) for the driver's figures."""
        used, adjusted = TripFigures(distance_m=req.distance_m, duration_s=req.duration_s), None
        if req.metered:
            used, adjusted = await self.db.read(lambda s: metered_trip(s, req))

        def amount(held: int) -> int:
            return final_charge_cents(
                used.distance_m, used.duration_s, req.quote.surge_multiplier, held
            )

        captured = await self._settle(req.ride_id, "fare", amount)
        if not req.metered:
            return captured
        return captured.model_copy(update={"used": used, "adjusted": adjusted})

    @activity.defn(name=Step.CHARGE_CANCELLATION_FEE)
    async def charge_cancellation_fee(self, req: FeeRequest) -> Capture:
        """Capture the cancellation fee, or void the hold inside the free window."""

        def amount(held: int) -> int:
            return cancellation_fee_cents(
                req.assigned_at, req.cancelled_at, req.free_cancel_s, held
            )

        return await self._settle(req.ride_id, "cancellation_fee", amount)

    @activity.defn(name=Step.VOID_PAYMENT)
    async def void_payment(self, req: SettleRequest) -> Capture:
        """Release the hold (nothing to do without one, e.g. after a declined card)."""
        return await self._settle(req.ride_id, "release", lambda held: 0)

    @activity.defn(name=Step.REFUND_PAYMENT)
    async def refund_payment(self, req: SettleRequest) -> Capture:
        """Refund whatever was captured and not yet refunded; returns the amount."""
        key = step_key(REFUND)

        def run(session: Session) -> tuple[Capture, list[CloudEvent]]:
            entries = ledger(session, req.ride_id)
            capture, earlier = _first(entries, CAPTURE), _first(entries, REFUND)
            if earlier is not None:  # a retry whose first attempt went through
                return Capture(amount_cents=earlier.amount_cents, currency=earlier.currency), []
            owed = capture.amount_cents if capture is not None else 0
            if capture is None or owed <= 0:
                return Capture(amount_cents=0, currency="USD"), []
            ref = self.gateway.refund(capture.gateway_ref, owed, key)
            event = _record(session, req.ride_id, REFUND, owed, capture.currency, key, ref,
                            "ride.payment_refunded", purpose="fare")
            return Capture(amount_cents=owed, currency=capture.currency), [event]

        return await self.outbox.write(run)

    async def _settle(self, ride_id: str, purpose: str, amount_of: Callable[[int], int]) -> Capture:
        """Capture ``amount_of(held)`` of the hold, or void it when that is zero. Does
        nothing when there is no hold (a declined card) or it is already settled, and
        returns what was captured then."""
        key = step_key("settle")

        def run(session: Session) -> tuple[Capture, list[CloudEvent]]:
            entries = ledger(session, ride_id)
            auth = _first(entries, AUTHORIZE)
            if auth is None:
                return Capture(amount_cents=0, currency="USD"), []
            done = _first(entries, CAPTURE) or _first(entries, VOID)
            if done is not None:
                captured = done.amount_cents if done.kind == CAPTURE else 0
                return Capture(amount_cents=captured, currency=auth.currency), []
            amount = amount_of(auth.amount_cents)
            if amount > 0:
                ref = self.gateway.capture(auth.gateway_ref, amount, key)
                kind, moved, event_type = CAPTURE, amount, "ride.payment_captured"
            else:
                ref = self.gateway.void(auth.gateway_ref, key)
                kind, moved, event_type = VOID, auth.amount_cents, "ride.payment_voided"
            # a concurrent settlement of the same hold fails on the unique key here; the
            # activity's retry then finds it above
            event = _record(session, ride_id, kind, moved, auth.currency, key, ref, event_type,
                            purpose=purpose)
            return Capture(amount_cents=amount, currency=auth.currency), [event]

        return await self.outbox.write(run)
