"""Payment rules: the hold, the final charge and the cancellation fee."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from activities.payments import Declined as CardDeclined
from activities.payments import GatewayUnavailable, SandboxGateway
from domain.geo import Point
from domain.payments import (
    CANCELLATION_FEE_CENTS,
    cancellation_fee_cents,
    final_charge_cents,
    hold_cents,
    is_payment_method,
)
from domain.pricing import MAX_TRIP_KM, estimate_trip, fare_cents, largest_fare_cents


@pytest.mark.parametrize(
    ("quoted", "held"),
    [
        (700, 1200),  # small fares: at least 5.00 above the quote
        (2000, 2500),
        (2001, 2502),  # 25 %, rounded up to the cent
        (4000, 5000),
        (10_000, 12_500),
    ],
)
def test_the_hold_is_the_quote_plus_a_buffer(quoted: int, held: int) -> None:
    assert hold_cents(quoted) == held
    assert hold_cents(quoted) - quoted >= 500


def test_the_hold_is_never_above_the_largest_fare_of_the_longest_trip() -> None:
    largest = largest_fare_cents(MAX_TRIP_KM)
    # the longest trip's estimate at the highest surge is that fare
    times_square = Point(lat=40.758, lng=-73.9855)
    far = Point(lat=40.758 + MAX_TRIP_KM / 111.2, lng=-73.9855)  # ~150 km north
    trip = estimate_trip(times_square, far)
    assert fare_cents(trip.distance_m, trip.duration_s, 3.0) <= largest * 1.01
    assert hold_cents(2_707_605) == largest  # New York to Tokyo's quote, once
    assert hold_cents(largest) == largest
    assert hold_cents(largest - 100) == largest
    assert hold_cents(10_000) == 12_500  # an ordinary ride is untouched
    # a shorter longest trip lowers the cap
    assert hold_cents(10_000, max_trip_km=5) == largest_fare_cents(5) < 12_500


@pytest.mark.parametrize("token", ["card", "card_declined", "card_flaky", "pm_4f2a9c",
                                   "pm_ABC123"])
def test_payment_method_tokens(token: str) -> None:
    assert is_payment_method(token)
    assert SandboxGateway().authorize(token if token != "card_declined" else "card",
                                      1000, "k", attempt=9)


@pytest.mark.parametrize("token", ["bitcoin", "", "Card", "card_", "pm_", "pm_a-b",
                                   "cash", "pm_" + "a" * 62])
def test_other_tokens_are_not_payment_methods(token: str) -> None:
    assert not is_payment_method(token)
    with pytest.raises(CardDeclined):
        SandboxGateway().authorize(token, 1000, "k", attempt=1)


def test_the_final_charge_is_the_trip_fare_at_the_quoted_surge() -> None:
    held = hold_cents(fare_cents(2600, 380, 1.3))
    assert final_charge_cents(2300, 540, 1.3, held) == fare_cents(2300, 540, 1.3)
    assert final_charge_cents(2300, 540, 1.0, held) < final_charge_cents(2300, 540, 1.3, held)


def test_the_final_charge_never_exceeds_the_hold() -> None:
    held = hold_cents(fare_cents(2600, 380, 1.0))
    assert final_charge_cents(50_000, 5_000, 1.0, held) == held


T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("after_s", "fee"),
    [
        (0, 0),
        (119, 0),
        (120, 0),  # the window is inclusive
        (121, CANCELLATION_FEE_CENTS),
        (3600, CANCELLATION_FEE_CENTS),
    ],
)
def test_the_cancellation_fee_applies_once_the_free_window_is_over(after_s: int, fee: int) -> None:
    assert cancellation_fee_cents(T0, T0 + timedelta(seconds=after_s), 120, 5000) == fee


def test_the_cancellation_fee_never_exceeds_the_hold_and_a_zero_window_charges_at_once() -> None:
    assert cancellation_fee_cents(T0, T0 + timedelta(minutes=5), 120, 300) == 300
    assert cancellation_fee_cents(T0, T0 + timedelta(seconds=1), 0, 5000) == 500


def test_the_sandbox_declines_refuses_and_recovers() -> None:
    gw = SandboxGateway()
    with pytest.raises(CardDeclined):
        gw.authorize("card_declined", 1000, "k", attempt=1)
    for attempt in (1, 2):
        with pytest.raises(GatewayUnavailable):
            gw.authorize("card_flaky", 1000, "k", attempt=attempt)
    assert gw.authorize("card_flaky", 1000, "k", attempt=3) == "auth_k"
    assert gw.authorize("card", 1000, "k", attempt=1) == "auth_k"
