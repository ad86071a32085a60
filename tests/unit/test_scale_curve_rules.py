"""deploy/sizing/scale_curve.py's rules: the configurations by name, and where a sweep's
throughput stops rising."""

from __future__ import annotations

import pytest

from deploy.sizing.sizing_figures import parse_config, saturation


def test_named_configurations() -> None:
    assert parse_config("1-each") == ("1-each", {"api": 1, "worker": 1, "consumers": 1,
                                                 "relay": 1})
    assert parse_config("api×2") == ("api×2", {"api": 2, "worker": 1, "consumers": 1,
                                               "relay": 1})
    assert parse_config("relayx2")[1]["relay"] == 2
    assert parse_config("all×3")[1] == {"api": 3, "worker": 3, "consumers": 3, "relay": 3}
    assert parse_config("api*2+workers x3") == (
        "api×2+worker×3", {"api": 2, "worker": 3, "consumers": 1, "relay": 1})


@pytest.mark.parametrize("text", ["api", "db×2", "api×0", "api×2+", "2-each"])
def test_what_is_not_a_configuration(text: str) -> None:
    with pytest.raises(ValueError, match="not a configuration"):
        parse_config(text)


def test_throughput_stops_rising_at_the_first_step_gaining_under_ten_percent() -> None:
    sat = saturation([(10, 2.0), (20, 3.0), (40, 3.2), (80, 4.0)])
    assert (sat["stops_at"], sat["knee"], sat["gain_pct"]) == (40, 20, 6.7)


def test_a_step_that_loses_throughput_has_stopped_rising() -> None:
    assert saturation([(10, 2.0), (20, 1.5)])["stops_at"] == 20


def test_still_rising_when_every_step_gains_ten_percent_or_more() -> None:
    sat = saturation([(10, 1.0), (20, 1.5), (40, 2.0)])
    assert sat["stops_at"] is None and sat["still_rising_at"] == 40


def test_a_step_after_one_that_completed_nothing() -> None:
    assert saturation([(2, 0.0), (4, 0.5)])["stops_at"] is None
    assert saturation([(2, 0.0), (4, 0.0)])["stops_at"] == 4
