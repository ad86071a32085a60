"""The event catalog: committed schemas, compatibility rules, envelope and upcasting."""

from __future__ import annotations

import copy
import json

import pytest

from domain.geo import Point
from events.catalog import CATALOG, DriverLocationUpdated, RideRequested, current_version
from events.envelope import CloudEvent, InvalidEvent, logical_subject, new_event, parse_event
from events.schema_registry import breaking_changes, check, generated_schema, schema_path


def test_committed_schemas_match_the_models() -> None:
    assert check() == []


def test_every_type_and_version_has_a_schema_file() -> None:
    for event_type, versions in CATALOG.items():
        for version in versions:
            assert schema_path(event_type, version).exists(), (event_type, version)


def _ride_requested_schema() -> dict:
    return copy.deepcopy(generated_schema("ride.requested", 1))


def test_a_new_optional_field_is_compatible() -> None:
    old = _ride_requested_schema()
    new = copy.deepcopy(old)
    new["properties"]["promo_code"] = {"anyOf": [{"type": "string"}, {"type": "null"}],
                                       "default": None}
    assert breaking_changes(old, new) == []


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda s: s["properties"].pop("rider_id"), "removed"),
        (lambda s: s["properties"].update(rider_id={"type": "integer"}), "changed type"),
        (lambda s: s["required"].append("quote_id"), "newly required"),
        (lambda s: s["$defs"]["Point"]["properties"].pop("lng"), "changed type"),
    ],
)
def test_breaking_changes_are_caught(change, why: str) -> None:  # type: ignore[no-untyped-def]
    old = _ride_requested_schema()
    new = copy.deepcopy(old)
    change(new)
    problems = breaking_changes(old, new)
    assert problems and any(why in p for p in problems), problems


def test_a_breaking_model_change_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    class Narrower(RideRequested):
        model_config = {"extra": "ignore"}
        rider_id: int  # type: ignore[assignment]

    monkeypatch.setitem(CATALOG, "ride.requested", {1: Narrower})
    problems = check()
    assert any("ride.requested v1 changed incompatibly" in p and "add version 2" in p
               for p in problems), problems


def test_version_1_of_a_location_update_is_upcast_to_version_2() -> None:
    assert current_version("driver.location_updated") == 2
    body = json.dumps({
        "specversion": "1.0", "id": "e1", "source": "ridehail/api",
        "type": "driver.location_updated", "subject": "d1",
        "time": "2026-11-28T10:00:00Z", "datacontenttype": "application/json",
        "dataversion": 1, "data": {"driver_id": "d1", "lat": 40.75, "lng": -73.99},
    }).encode()
    payload = parse_event(body).payload()
    assert isinstance(payload, DriverLocationUpdated)
    assert payload.location == Point(lat=40.75, lng=-73.99)
    assert payload.accuracy_m is None


def test_new_events_carry_the_current_version_and_subject() -> None:
    e = new_event("driver.location_updated",
                  DriverLocationUpdated(driver_id="d1", location=Point(lat=1, lng=2)),
                  source="ridehail/api", subject="d1")
    assert e.dataversion == 2 and e.nats_subject == "drivers.d1.location_updated"
    assert parse_event(e.to_json()) == e
    with pytest.raises(TypeError):
        new_event("ride.requested", e.payload(), source="ridehail/api", subject="d1")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"specversion": "1.0"}',
        json.dumps({"specversion": "1.0", "id": "x", "source": "s", "type": "ride.unknown",
                    "subject": "r", "time": "2026-11-28T10:00:00Z", "dataversion": 1,
                    "data": {}}).encode(),
        json.dumps({"specversion": "1.0", "id": "x", "source": "s", "type": "ride.requested",
                    "subject": "r", "time": "2026-11-28T10:00:00Z", "dataversion": 1,
                    "data": {"ride_id": "r"}}).encode(),
        json.dumps({"specversion": "1.0", "id": "x", "source": "s", "type": "ride.requested",
                    "subject": "r", "time": "2026-11-28T10:00:00Z", "dataversion": 7,
                    "data": {}}).encode(),
    ],
)
def test_invalid_messages_are_rejected(body: bytes) -> None:
    with pytest.raises(InvalidEvent):
        parse_event(body)


def test_partitioned_subjects_map_back_to_the_published_subject() -> None:
    assert logical_subject("rides.3.abc.requested") == "rides.abc.requested"
    assert logical_subject("drivers.0.d-1.online") == "drivers.d-1.online"
    assert logical_subject("dlq.notifier.rides.abc.requested") == \
        "dlq.notifier.rides.abc.requested"


def test_a_subject_cannot_break_the_subject_hierarchy() -> None:
    with pytest.raises(ValueError):
        CloudEvent(id="x", source="s", type="ride.requested", subject="a.b",
                   time="2026-11-28T10:00:00Z", dataversion=1, data={})  # type: ignore[arg-type]
