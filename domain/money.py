"""Money as integer cents inside ridehail, decimal strings at the edges (``"12.40"``)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CURRENCY = "USD"
_CENT = Decimal("0.01")


def to_decimal(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(_CENT)


def to_cents(amount: Decimal | str | float) -> int:
    return int((Decimal(str(amount)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def fmt(cents: int | None) -> str | None:
    return None if cents is None else str(to_decimal(cents))
