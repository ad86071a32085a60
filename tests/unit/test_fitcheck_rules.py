"""The fit-check's rules without a server: versions, the differences it reports, and the
declared consumers matching the consumers that run."""

from __future__ import annotations

import dataclasses

from nats.js.api import AckPolicy, StorageType

from events.catalog import RIDE_COMMANDS
from events.consumers.notifier import Notifier
from events.consumers.projectors import Projectors
from events.consumers.trigger import WorkflowTrigger
from events.fitcheck import (
    MIN_NATS_VERSION,
    consumer_differences,
    parse_version,
    stranded_filter,
    stream_differences,
)
from events.streams import stream_configs
from events.topology import CONSUMER_GROUPS, NOTIFIER, RIDE_PROJECTOR, WORKFLOW_TRIGGER
from infra.config import Settings


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
