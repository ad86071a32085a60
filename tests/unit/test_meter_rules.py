"""The trip meter's rule (domain.meter): which trip the fare is computed from."""

from __future__ import annotations

from domain.meter import MIN_METER_POINTS, Figures, settle_trip, trip_so_far


def test_figures_that_agree_with_the_meter_are_charged_as_reported() -> None:
    s = settle_trip(Figures(3000, 400), metered_m=2600, points=10, elapsed_s=380,
                    estimate_m=2000)
    assert s == type(s)(Figures(3000, 400), None)


def test_a_distance_beyond_the_tolerance_is_replaced_by_the_meter() -> None:
    # 25% of 2600 m plus 500 m is 1150 m: 3751 m is too far
    s = settle_trip(Figures(3751, 400), metered_m=2600, points=10, elapsed_s=380,
                    estimate_m=9000)
    assert s.used == Figures(2600, 400) and s.reason and "meter" in s.reason
    assert settle_trip(Figures(3750, 400), 2600, 10, 380, 9000).reason is None


def test_with_too_few_points_the_route_estimate_is_the_reference() -> None:
    s = settle_trip(Figures(2_000_000, 86_400), metered_m=0, points=MIN_METER_POINTS - 1,
                    elapsed_s=12, estimate_m=2624)
    assert s.used == Figures(2624, 12)
    assert s.reason and "route estimate" in s.reason and "duration" in s.reason


def test_an_under_report_is_replaced_too() -> None:
    assert settle_trip(Figures(0, 0), 5000, 20, 900, 5000).used == Figures(5000, 900)


def test_a_trip_cut_short_is_the_meter_so_far() -> None:
    assert trip_so_far(1234.4, 61.6) == Figures(1234, 62)
    assert trip_so_far(0, -3) == Figures(0, 0)
