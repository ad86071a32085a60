"""A workflow change made the safe way: releasing the driver before capturing the fare
is behind ``workflow.patched``. Rides recorded before it still replay down the old
branch, new rides take the new order, and without the guard the old histories break."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio import workflow

from events.history import ride_history
from ridehail.replay import load_history, replay_files
from ridehail.scenarios import City, Timeouts, happy_path
from tests.support.stack import Stack
from workflows.ride import RELEASE_BEFORE_CAPTURE

HISTORIES = Path(__file__).parent / "histories"
BEFORE = HISTORIES / "happy_path.json"  # recorded before the change
AFTER = HISTORIES / "happy_path_release_first.json"  # recorded after it


def activity_order(path: Path) -> list[str]:
    events = json.loads(path.read_text())["events"]
    return [e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
            for e in events if "activityTaskScheduledEventAttributes" in e]


def has_marker(path: Path) -> bool:
    return any("markerRecordedEventAttributes" in e
               for e in json.loads(path.read_text())["events"])


def test_the_recorded_histories_show_both_orders() -> None:
    old, new = activity_order(BEFORE), activity_order(AFTER)
    assert old.index("capture_payment") < old.index("release_driver")
    assert new.index("release_driver") < new.index("capture_payment")
    assert not has_marker(BEFORE) and has_marker(AFTER)


async def test_both_histories_replay_against_the_patched_code() -> None:
    outcomes = await replay_files([BEFORE, AFTER])
    assert [o.ok for o in outcomes] == [True, True], [o.error for o in outcomes]


async def test_without_the_guard_the_old_history_would_break(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The change deployed carelessly (always the new order) fails the old rides."""
    real = workflow.patched
    monkeypatch.setattr(workflow, "patched",
                        lambda patch_id: True if patch_id == RELEASE_BEFORE_CAPTURE
                        else real(patch_id))
    [outcome] = await replay_files([BEFORE])
    assert not outcome.ok and "Nondeterminism" in (outcome.error or "")


async def test_a_new_ride_completes_with_the_driver_released_first(stack: Stack) -> None:
    settings = stack.settings
    city = City(stack.http, settings.require_jwt_secret(), 0,
                Timeouts(settings.offer_timeout_s, settings.matching_deadline_s,
                         settings.free_cancel_s))
    ride_id = await happy_path(city)
    types = [e.type for _, e in await ride_history(stack.rt.js, ride_id)]
    assert types[-3:] == ["ride.driver_released", "ride.payment_captured", "ride.completed"]
    history = await stack.temporal.get_workflow_handle(f"ride-{ride_id}").fetch_history()
    assert any(e.HasField("marker_recorded_event_attributes") for e in history.events)
    assert load_history(AFTER).workflow_id == AFTER.stem
