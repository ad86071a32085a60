"""Payment policy: the hold placed at request, the final charge and the late-cancellation
fee. ``activities.payments`` applies it against the ledger and the gateway."""

from __future__ import annotations

import math
import re
from datetime import datetime

from domain.pricing import MAX_TRIP_KM, fare_cents, largest_fare_cents

HOLD_BUFFER = 0.25  # the hold exceeds the quote by 25% ...
HOLD_MIN_EXTRA_CENTS = 500  # ... and by at least 5.00, to cover a longer trip
CANCELLATION_FEE_CENTS = 500
# The payment gateway's token format: "card" or a test card ("card_declined",
# "card_flaky"), or a saved payment method, "pm_" and letters and digits. Anything else
# (a typo, "bitcoin") is refused when the ride is requested, before a hold is tried.
PAYMENT_METHOD_PATTERN = r"^(card(_[a-z0-9]+)*|pm_[A-Za-z0-9]{1,60})$"
PAYMENT_METHOD_MAX_LENGTH = 64  # what the rides table keeps


def is_payment_method(token: str) -> bool:
    """Whether ``token`` has the gateway's token format."""
    return (len(token) <= PAYMENT_METHOD_MAX_LENGTH
            and re.fullmatch(PAYMENT_METHOD_PATTERN, token) is not None)


def hold_cents(quoted_cents: int, max_trip_km: float = MAX_TRIP_KM) -> int:
    """The hold placed at request time: the quote plus a buffer for a longer trip, but
    never above the largest fare a trip of at most ``max_trip_km`` is quoted, so no ride
    is charged more than that."""
    buffered = quoted_cents + max(math.ceil(quoted_cents * HOLD_BUFFER), HOLD_MIN_EXTRA_CENTS)
    return min(buffered, largest_fare_cents(max_trip_km))


def final_charge_cents(distance_m: int, duration_s: int, surge: float, held: int) -> int:
    """The trip's fare at the quoted surge, never more than the hold."""
    return min(fare_cents(distance_m, duration_s, surge), held)


def cancellation_fee_cents(
    assigned_at: datetime, cancelled_at: datetime, free_cancel_s: float, held: int
) -> int:
    """A rider cancelling after a driver was assigned pays a fee once the free window
    has passed; within it, nothing."""
    if (cancelled_at - assigned_at).total_seconds() <= free_cancel_s:
        return 0
    return min(CANCELLATION_FEE_CENTS, held)
