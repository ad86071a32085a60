"""Properties of the money rules (Hypothesis): whatever the trip, the hold, the capture,
the fee and the refund stay within each other and no cent appears or vanishes in the
conversions between cents and the decimal strings of the API and the events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.money import fmt, to_cents, to_decimal
from domain.payments import (
    CANCELLATION_FEE_CENTS,
    cancellation_fee_cents,
    final_charge_cents,
    hold_cents,
)
from domain.pricing import (
    MAX_TRIP_KM,
    MINIMUM_CENTS,
    SURGE_MAX,
    fare_cents,
    largest_fare_cents,
    surge_multiplier,
)

settings.register_profile("ridehail", deadline=None, max_examples=300)
settings.load_profile("ridehail")

cents = st.integers(min_value=0, max_value=10**9)
quotes = st.integers(min_value=MINIMUM_CENTS, max_value=10**7)
distances = st.integers(min_value=0, max_value=2_000_000)  # up to 2000 km
durations = st.integers(min_value=0, max_value=86_400 * 2)
surges = st.integers(min_value=10, max_value=30).map(lambda tenths: tenths / 10)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@given(quoted=quotes, distance=distances, duration=durations, surge=surges)
def test_captured_never_exceeds_the_hold(quoted: int, distance: int, duration: int,
                                         surge: float) -> None:
    held = hold_cents(quoted)
    largest = largest_fare_cents(MAX_TRIP_KM)
    assert min(quoted + 500, largest) <= held <= largest
    captured = final_charge_cents(distance, duration, surge, held)
    assert 0 < captured <= held


@given(held=quotes, window=st.floats(min_value=0, max_value=3600),
       after_us=st.integers(min_value=0, max_value=7 * 86_400 * 10**6))
def test_a_fee_only_after_the_window_and_never_above_the_hold(
        held: int, window: float, after_us: int) -> None:
    after = timedelta(microseconds=after_us)  # times are kept to the microsecond
    fee = cancellation_fee_cents(T0, T0 + after, window, held)
    if after.total_seconds() <= window:
        assert fee == 0
    else:
        assert fee == min(CANCELLATION_FEE_CENTS, held) > 0
    assert fee <= held


@given(d1=distances, d2=distances, t1=durations, t2=durations, surge=surges)
def test_the_fare_is_monotone_in_distance_and_time(d1: int, d2: int, t1: int, t2: int,
                                                   surge: float) -> None:
    (d_lo, d_hi), (t_lo, t_hi) = sorted((d1, d2)), sorted((t1, t2))
    assert fare_cents(d_lo, t_lo, surge) <= fare_cents(d_hi, t_lo, surge)
    assert fare_cents(d_lo, t_lo, surge) <= fare_cents(d_lo, t_hi, surge)
    assert fare_cents(d_lo, t_lo, surge) <= fare_cents(d_hi, t_hi, surge)
    assert fare_cents(d_lo, t_lo, surge) >= MINIMUM_CENTS


@given(d=distances, t=durations, s1=surges, s2=surges)
def test_the_fare_is_monotone_in_surge(d: int, t: int, s1: float, s2: float) -> None:
    lo, hi = sorted((s1, s2))
    assert fare_cents(d, t, lo) <= fare_cents(d, t, hi)


@given(r1=st.integers(0, 500), r2=st.integers(0, 500), drivers=st.integers(0, 200))
def test_surge_rises_with_demand_within_bounds(r1: int, r2: int, drivers: int) -> None:
    lo, hi = sorted((r1, r2))
    assert 1.0 <= surge_multiplier(lo, drivers) <= surge_multiplier(hi, drivers) <= SURGE_MAX
    assert surge_multiplier(hi, drivers + 1) <= surge_multiplier(hi, drivers)


@given(c=cents)
def test_cents_survive_the_decimal_strings(c: int) -> None:
    assert to_cents(to_decimal(c)) == c
    assert to_cents(fmt(c) or "") == c
    assert to_decimal(c) == Decimal(c) / 100


@given(quoted=quotes, distance=distances, duration=durations, surge=surges,
       cancelled=st.booleans(), refunded=st.booleans())
def test_no_cent_is_created_or_lost_across_hold_capture_fee_and_refund(
        quoted: int, distance: int, duration: int, surge: float, cancelled: bool,
        refunded: bool) -> None:
    """What the rider is charged plus what is released is the hold, to the cent, in
    cents and in the decimal strings the events carry; a refund gives back exactly what
    was captured."""
    held = hold_cents(quoted)
    captured = (cancellation_fee_cents(T0, T0 + timedelta(hours=1), 120, held) if cancelled
                else final_charge_cents(distance, duration, surge, held))
    released = held - captured
    assert 0 <= captured <= held and released >= 0
    assert to_decimal(captured) + to_decimal(released) == to_decimal(held)
    assert to_cents(fmt(captured) or "") + to_cents(fmt(released) or "") == held
    refund = captured if refunded else 0  # refund_payment refunds what was captured
    assert 0 <= refund <= captured
    assert to_decimal(captured) - to_decimal(refund) == to_decimal(captured - refund)
