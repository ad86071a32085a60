"""Payment policy: the hold placed at request, the final charge and the late-cancellation
fee. ``activities.payments`` applies it against the ledger and the gateway."""

from __future__ import annotations

import math
from datetime import datetime

from domain.pricing import fare_cents

HOLD_BUFFER = 0.25  # the hold exceeds the quote by 25% ...
HOLD_MIN_EXTRA_CENTS = 500  # ... and by at least 5.00, to cover a longer trip
CANCELLATION_FEE_CENTS = 500


def hold_cents(quoted_cents: int) -> int:
    """The hold placed at request time: the quote plus a buffer for a longer trip."""
    return quoted_cents + max(math.ceil(quoted_cents * HOLD_BUFFER), HOLD_MIN_EXTRA_CENTS)


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
