"""How long a consumer waits before it tries again after a transient failure."""

from __future__ import annotations

from events.consumer import TRANSIENT_FIRST_DELAY_S, TRANSIENT_MAX_DELAY_S, transient_delay


def test_the_delay_doubles_from_the_first_up_to_the_cap() -> None:
    delays = [transient_delay(n) for n in range(1, 10)]
    assert delays[:3] == [TRANSIENT_FIRST_DELAY_S, 2 * TRANSIENT_FIRST_DELAY_S,
                          4 * TRANSIENT_FIRST_DELAY_S]
    assert delays == sorted(delays)
    assert delays[-1] == TRANSIENT_MAX_DELAY_S


def test_a_failure_that_lasts_for_days_keeps_the_capped_delay() -> None:
    # a try every 30 s: the 1025th comes after about 8.5 hours, the 100,000th after a month
    for attempt in (1025, 100_000):
        assert transient_delay(attempt) == TRANSIENT_MAX_DELAY_S
