"""The trip meter's rule: which distance and duration the final fare is computed from.

The assigned driver reports the trip's distance and duration when they complete it.
The server has its own figures: the distance the meter summed from the driver's
location reports between ``trip_started`` and ``trip_ended`` (great-circle steps
between consecutive points), and the duration between those two events' times. The
driver's figures are charged only when they agree with the server's within the
tolerance; otherwise the server's are, and the ride says why (CONTRACT.md section 5).

With too few location points the meter says little (an app that did not report, a
short hop), so the driver's distance is checked against the quote's route estimate
instead.
"""

from __future__ import annotations

from dataclasses import dataclass

# The driver's figure agrees when within 25% of the server's, plus a fixed allowance
# (GPS noise, the streets between two fixes, the seconds between tapping and sending).
TOLERANCE = 0.25
DISTANCE_ALLOWANCE_M = 500
DURATION_ALLOWANCE_S = 60
# Fewer location points than this during the trip: check against the route estimate.
MIN_METER_POINTS = 3


@dataclass(frozen=True)
class Figures:
    distance_m: int
    duration_s: int


@dataclass(frozen=True)
class Settlement:
    used: Figures
    reason: str | None  # None: the driver's figures were charged as reported


def agrees(reported: float, reference: float, allowance: float) -> bool:
    return abs(reported - reference) <= TOLERANCE * reference + allowance


def settle_trip(
    reported: Figures,
    metered_m: float,
    points: int,
    elapsed_s: float,
    estimate_m: int,
) -> Settlement:
    """The figures to charge: the driver's where they agree with the server's, the
    server's where they do not. ``metered_m`` and ``points`` are the meter's distance and
    location points, ``elapsed_s`` the time between the trip's start and end events,
    ``estimate_m`` the quote's route estimate."""
    if points >= MIN_METER_POINTS:
        reference_m, source = round(metered_m), "meter"
    else:
        reference_m, source = estimate_m, "route estimate"
    elapsed = max(0, round(elapsed_s))
    reasons = []
    distance = reported.distance_m
    if not agrees(reported.distance_m, reference_m, DISTANCE_ALLOWANCE_M):
        distance = reference_m
        reasons.append(f"reported distance {reported.distance_m} m disagrees with the "
                       f"{source} ({reference_m} m)")
    duration = reported.duration_s
    if not agrees(reported.duration_s, elapsed, DURATION_ALLOWANCE_S):
        duration = elapsed
        reasons.append(f"reported duration {reported.duration_s} s disagrees with the time "
                       f"between trip start and end ({elapsed} s)")
    return Settlement(Figures(distance, duration), "; ".join(reasons) or None)


def trip_so_far(metered_m: float, elapsed_s: float) -> Figures:
    """What a trip cut short by a cancellation is charged for: the meter's distance and
    the time since the trip started."""
    return Figures(round(metered_m), max(0, round(elapsed_s)))
