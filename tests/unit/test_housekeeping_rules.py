"""Housekeeping's rules that need no database: the lifetimes the settings accept, the
store each setting is the lifetime of, and the names the Temporal UI shows."""

from __future__ import annotations

import pytest

from activities.housekeeping import lifetimes
from infra.config import Settings
from ridehail.commands.prune import span
from store.prune import STORES, stores_on
from workflows.housekeeping import PRUNE_ACTIVITY, SCHEDULE_ID, WORKFLOW_TYPE, PruneReport

DEFAULTS = {"processed_keep_s": 7 * 86400, "idempotency_keep_s": 2 * 86400,
            "rate_limit_keep_s": 3600, "offer_keep_s": 30 * 86400,
            "notification_keep_s": 30 * 86400, "trip_meter_keep_s": 30 * 86400,
            "outbox_ids_keep_s": 7 * 86400, "stream_keep_s": 86400, "prune_every_s": 3600}


def settings(**update: float) -> Settings:
    """Settings with the contract's defaults, whatever the environment says."""
    return Settings(**{**DEFAULTS, **update})


def test_a_processed_record_outlives_the_stream_window() -> None:
    with pytest.raises(ValueError, match=r"RIDEHAIL_PROCESSED_KEEP_S is 3600: .* at least "
                                         r"RIDEHAIL_STREAM_KEEP_S \(86400\) plus 60"):
        settings(processed_keep_s=3600)
    assert settings(stream_keep_s=120, processed_keep_s=180).processed_keep_s == 180
    # unset, it is a week, or the stream window and the margin when that is longer
    unset = {k: v for k, v in DEFAULTS.items() if k != "processed_keep_s"}
    assert Settings(**{**unset, "stream_keep_s": 30 * 86400}).processed_keep_s == 30 * 86400 + 60
    assert Settings(**unset).processed_keep_s == 7 * 86400


def test_an_idempotency_key_is_kept_at_least_a_day() -> None:
    with pytest.raises(ValueError, match=r"RIDEHAIL_IDEMPOTENCY_KEEP_S is 3600: .*24 hours"):
        settings(idempotency_keep_s=3600)
    assert settings(idempotency_keep_s=86400).idempotency_keep_s == 86400


@pytest.mark.parametrize("name", ["rate_limit_keep_s", "offer_keep_s", "trip_meter_keep_s"])
def test_the_other_lifetimes_may_be_short_but_not_negative(name: str) -> None:
    assert getattr(settings(**{name: 0}), name) == 0
    with pytest.raises(ValueError, match=name):
        settings(**{name: -1})


def test_a_notification_is_kept_at_least_a_minute() -> None:
    """Its lifetime is the NOTIFICATIONS stream's age limit too, where 0 means for good."""
    assert settings(notification_keep_s=60).notification_keep_s == 60
    for bad in (59, 0, -1):
        with pytest.raises(ValueError, match=r"notification_keep_s\n.*"
                                             rf"RIDEHAIL_NOTIFICATION_KEEP_S is {bad}: "):
            settings(notification_keep_s=bad)


def test_an_event_id_is_claimed_for_some_time() -> None:
    with pytest.raises(ValueError, match="outbox_ids_keep_s"):
        settings(outbox_ids_keep_s=0)
    unset = {k: v for k, v in DEFAULTS.items() if k != "outbox_ids_keep_s"}
    assert Settings(**unset).outbox_ids_keep_s == 7 * 86400


def test_housekeeping_runs_at_most_once_a_minute() -> None:
    with pytest.raises(ValueError, match="prune_every_s"):
        settings(prune_every_s=10)


def test_each_store_has_its_setting() -> None:
    keep = lifetimes(settings(offer_keep_s=11, notification_keep_s=72, trip_meter_keep_s=13,
                              rate_limit_keep_s=14, outbox_ids_keep_s=15,
                              rate_limit_window_s=30))
    assert list(keep.keep_s) == list(STORES)
    assert keep.keep_s == {"processed_events": 7 * 86400, "idempotency_keys": 2 * 86400,
                           "rate_limit_hits": 14, "offers": 11, "notifications": 72,
                           "trip_meters": 13, "outbox_ids": 15}
    assert keep.rate_limit_window_s == 30


def test_outbox_ids_is_a_store_of_postgresql_alone() -> None:
    assert stores_on("postgresql") == STORES
    assert stores_on("sqlite") == tuple(s for s in STORES if s != "outbox_ids")


def test_the_names_the_temporal_ui_shows() -> None:
    assert (SCHEDULE_ID, WORKFLOW_TYPE, PRUNE_ACTIVITY) == (
        "ridehail-housekeeping", "HousekeepingWorkflow", "prune")
    assert PruneReport(removed={"offers": 2, "notifications": 3}).total == 5
    assert PruneReport().partitions_made == []  # a report of an older worker reads too


@pytest.mark.parametrize(("seconds", "said"), [(604800, "7d"), (172800, "2d"), (3600, "1h"),
                                               (120, "2m"), (90, "90s"), (0, "0s")])
def test_a_lifetime_is_said_the_way_a_person_says_it(seconds: float, said: str) -> None:
    assert span(seconds) == said
