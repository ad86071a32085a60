"""The fit-check's rules without a server: versions, the differences it reports, and the
declared consumers matching the consumers that run."""

from __future__ import annotations

import dataclasses

import pytest
from nats.js.api import AckPolicy, StorageType
from pydantic import ValidationError

from events.catalog import RIDE_COMMANDS
from events.consumer import ConsumerSpec
from events.consumers.notifier import Notifier
from events.consumers.projectors import Projectors
from events.consumers.trigger import WorkflowTrigger
from events.fitcheck import (
    MIN_NATS_VERSION,
    consumer_differences,
    in_place_update,
    parse_version,
    shortens_age,
    stranded_filter,
    stream_differences,
)
from events.streams import stream_configs
from events.topology import ACK_WAIT_S, CONSUMER_GROUPS, NOTIFIER, RIDE_PROJECTOR, WORKFLOW_TRIGGER
from infra.config import MIN_NOTIFICATION_KEEP_S, MIN_STREAM_KEEP_S, Settings


def test_versions_compare_as_numbers() -> None:
    assert parse_version("2.9.10") < MIN_NATS_VERSION <= parse_version("2.10.0")
    assert parse_version("v2.15.1") == (2, 15, 1)
    assert parse_version("2.11.0-beta.2") == (2, 11, 0)
    assert parse_version("2.12") == (2, 12, 0)


def test_a_stream_without_its_transform_differs_in_that_field_only() -> None:
    rides = next(c for c in stream_configs() if c.name == "RIDES")
    as_29_leaves_it = dataclasses.replace(rides, subject_transform=None)
    ((field, found, needed),) = stream_differences(rides, as_29_leaves_it)
    assert (field, found) == ("subject_transform", "none")
    assert needed.startswith("rides.*.* → rides.{{partition(8,1)}}")
    assert stream_differences(rides, rides) == []


def test_storage_replicas_and_limits_are_compared() -> None:
    rides = next(c for c in stream_configs() if c.name == "RIDES")
    other = dataclasses.replace(rides, storage=StorageType.MEMORY, num_replicas=3,
                                max_msgs=1000, duplicate_window=120.0)
    assert {d[0] for d in stream_differences(rides, other)} == {
        "storage", "num_replicas", "max_msgs", "duplicate_window"}


def test_only_partitioned_streams_can_strand_messages() -> None:
    by_name = {c.name: c for c in stream_configs()}
    assert stranded_filter(by_name["RIDES"]) == "rides.*.*"
    assert stranded_filter(by_name["DRIVERS"]) == "drivers.*.*"
    assert stranded_filter(by_name["DLQ"]) is None


def test_a_durable_with_another_filter_or_ack_policy_differs() -> None:
    durable, subject = WORKFLOW_TRIGGER.durables()[0]
    declared = WORKFLOW_TRIGGER.config(durable, subject)
    found = dataclasses.replace(declared, filter_subject="rides.>", ack_policy=AckPolicy.ALL,
                                max_deliver=6)
    assert consumer_differences(declared, found) == [
        ("filter_subject", "rides.>", ", ".join(WORKFLOW_TRIGGER.filter_subjects(subject))),
        ("ack_policy", "all", "explicit"),
        ("max_deliver", "6", "-1"),
    ]


def test_the_consumers_that_run_are_the_ones_declared() -> None:
    specs = [WorkflowTrigger(None, Settings()).spec(),  # type: ignore[arg-type]
             *Projectors(None).specs(),  # type: ignore[arg-type]
             Notifier(None).spec()]  # type: ignore[arg-type]
    assert sorted((s.group for s in specs), key=lambda g: g.name) == sorted(
        CONSUMER_GROUPS, key=lambda g: g.name)


def test_a_group_that_reads_some_types_filters_on_their_stored_subjects() -> None:
    durable, subject = WORKFLOW_TRIGGER.durables()[3]
    assert subject == "rides.3.>"
    config = WORKFLOW_TRIGGER.config(durable, subject)
    assert config.filter_subject is None
    assert config.filter_subjects == sorted(
        f"rides.3.*.{t.removeprefix('ride.')}" for t in RIDE_COMMANDS)
    (notifier, everything), = NOTIFIER.durables()
    assert everything == "rides.>"
    assert "rides.*.*.driver_assigned" in NOTIFIER.config(notifier, everything).filter_subjects
    # a group that reads every type keeps one filter subject
    durable, subject = RIDE_PROJECTOR.durables()[0]
    assert RIDE_PROJECTOR.config(durable, subject).filter_subject == "rides.0.>"


def _by_name(keep_s: float = 86400, **keeps: float) -> dict[str | None, tuple[float, float]]:
    """Each declared stream's (age limit, duplicate window), for a keep of ``keep_s`` (and
    ``notification_keep_s``, where given)."""
    return {c.name: (c.max_age, c.duplicate_window)
            for c in stream_configs(keep_s=keep_s, **keeps)}


def test_rides_and_drivers_keep_an_event_for_the_setting_and_no_longer() -> None:
    assert _by_name() == {
        "RIDES": (86400, 300), "DRIVERS": (86400, 300),
        "NOTIFICATIONS": (30 * 86400, 300),
        "DLQ": (0, 3600),  # kept until redriven or discarded
    }
    # JetStream refuses a duplicate window longer than the age limit
    assert _by_name(60)["RIDES"] == (60, 60)
    assert _by_name(2)["DRIVERS"] == (2, 2)
    with pytest.raises(ValueError, match="must keep an event"):
        stream_configs(keep_s=0)


def test_notifications_keep_a_notification_for_its_setting_and_no_longer() -> None:
    assert _by_name(notification_keep_s=3600) == {
        "RIDES": (86400, 300), "DRIVERS": (86400, 300),
        "NOTIFICATIONS": (3600, 300), "DLQ": (0, 3600)}
    # the duplicate window follows the keep as RIDES' and DRIVERS' do
    assert _by_name(notification_keep_s=60)["NOTIFICATIONS"] == (60, 60)
    assert _by_name(notification_keep_s=2)["NOTIFICATIONS"] == (2, 2)
    # and each stream follows its own setting alone
    assert _by_name(120, notification_keep_s=7 * 86400)["RIDES"] == (120, 120)
    assert _by_name(120, notification_keep_s=7 * 86400)["NOTIFICATIONS"] == (7 * 86400, 300)
    for never in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="NOTIFICATIONS must keep a notification"):
            stream_configs(notification_keep_s=never)


def test_the_notification_keep_setting_is_30_days_and_at_least_a_minute() -> None:
    assert Settings().notification_keep_s == 30 * 86400
    assert MIN_NOTIFICATION_KEEP_S == 60
    assert Settings(notification_keep_s=60).notification_keep_s == 60
    for bad in (59, 0, -1, float("nan"), float("inf")):
        with pytest.raises(ValidationError) as refused:
            Settings(notification_keep_s=bad)
        assert "notification_keep_s" in str(refused.value)
    with pytest.raises(ValidationError, match=r"RIDEHAIL_NOTIFICATION_KEEP_S is 0: .* at least "
                                              r"60 seconds .*NOTIFICATIONS stream"):
        Settings(notification_keep_s=0)


def test_a_notifications_stream_kept_longer_shortens_only_by_migration() -> None:
    """A NOTIFICATIONS stream made with the fixed 30 days, and a shorter setting."""
    declared = next(c for c in stream_configs(notification_keep_s=3600)
                    if c.name == "NOTIFICATIONS")
    as_made = next(c for c in stream_configs() if c.name == "NOTIFICATIONS")
    assert stream_differences(declared, as_made) == [("max_age", "2592000s", "3600s")]
    assert shortens_age(declared, as_made)
    assert in_place_update(declared, as_made).max_age == 30 * 86400
    # a longer setting is given in place
    assert not shortens_age(as_made, declared)
    assert in_place_update(as_made, declared) is as_made


def test_the_keep_setting_is_a_day_and_at_least_a_minute() -> None:
    assert Settings().stream_keep_s == 86400
    assert Settings(stream_keep_s=60).stream_keep_s == 60
    for bad in (59, 0, -1, float("nan"), float("inf")):
        with pytest.raises(ValidationError) as refused:
            Settings(stream_keep_s=bad)
        assert "stream_keep_s" in str(refused.value)
    with pytest.raises(ValidationError, match=r"RIDEHAIL_STREAM_KEEP_S is 10: .* at least 60"):
        Settings(stream_keep_s=10)


def test_the_shortest_keep_outlasts_a_message_s_redeliveries_twice() -> None:
    """A failing handler's message is redelivered after each delay of its backoff and
    dead-lettered on its last delivery; one delivery lost with its process comes back
    after the ack wait. The stream must still hold it meanwhile, with room to spare."""
    spec = ConsumerSpec("x", "RIDES", "rides", handler=None)  # type: ignore[arg-type]
    delays = [spec.backoff_s[min(n, len(spec.backoff_s) - 1)]
              for n in range(spec.max_deliver - 1)]
    assert MIN_STREAM_KEEP_S >= 2 * (sum(delays) + ACK_WAIT_S)


def test_a_stream_from_before_the_age_limit_shortens_only_by_migration() -> None:
    rides = next(c for c in stream_configs() if c.name == "RIDES")
    as_0_2_made_it = dataclasses.replace(rides, max_age=0, duplicate_window=3600)
    assert stream_differences(rides, as_0_2_made_it) == [
        ("max_age", "unlimited", "86400s"), ("duplicate_window", "3600s", "300s")]
    assert shortens_age(rides, as_0_2_made_it)
    # in place: the window, not the age limit (that would delete events at once)
    update = in_place_update(rides, as_0_2_made_it)
    assert (update.max_age, update.duplicate_window) == (0, 300)
    assert stream_differences(rides, update) == [("max_age", "unlimited", "86400s")]
    # a longer limit than the setting, too
    longer = dataclasses.replace(rides, max_age=7 * 86400)
    assert shortens_age(rides, longer)
    assert in_place_update(rides, longer).max_age == 7 * 86400


def test_a_longer_age_limit_is_given_in_place() -> None:
    rides = next(c for c in stream_configs() if c.name == "RIDES")
    shorter = dataclasses.replace(rides, max_age=3600)
    assert not shortens_age(rides, shorter)
    assert in_place_update(rides, shorter) is rides
    assert not shortens_age(rides, rides)
