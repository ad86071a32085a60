"""Workflow changes made the safe way, behind ``workflow.patched``: releasing the driver
before capturing the fare, and running the bookkeeping steps as local activities. Rides
recorded before each change still replay down the old branch, new rides take the new
one, and without the guard the old histories break."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.converter import decode_typed_search_attributes

from domain.status import RideStatus
from ridehail.load.apiclient import Api
from ridehail.load.scenarios import (
    Scene,
    Timeouts,
    happy_path,
    payment_declined,
    rider_cancels_before_assignment,
)
from ridehail.ops.replay import load_history, replay_files
from tests.support.histories import patches, recorded
from tests.support.rides import activity_runs, step_runs
from tests.support.ridestream import ride_history
from tests.support.stack import Stack
from workflows.contract import Step
from workflows.patches import COMMITTED_FACTS, LOCAL_BOOKKEEPING, RELEASE_BEFORE_CAPTURE

HISTORIES = Path(__file__).parents[1] / "histories"
BEFORE = HISTORIES / "happy_path.json"  # recorded before the driver was released first
AFTER = HISTORIES / "happy_path_release_first.json"  # recorded after it
LOCAL = HISTORIES / "happy_path_local_steps.json"  # after the bookkeeping steps went local

# The steps that call the payment gateway: activities, whichever the branch. Every other
# step is bookkeeping, run as a local activity since LOCAL_BOOKKEEPING.
PAYMENT_STEPS = {Step.AUTHORIZE_PAYMENT, Step.CAPTURE_PAYMENT, Step.VOID_PAYMENT,
                 Step.REFUND_PAYMENT, Step.CHARGE_CANCELLATION_FEE}


def activity_order(path: Path) -> list[str]:
    events = json.loads(path.read_text())["events"]
    return [e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
            for e in events if "activityTaskScheduledEventAttributes" in e]


def has_marker(path: Path) -> bool:
    return any("markerRecordedEventAttributes" in e
               for e in json.loads(path.read_text())["events"])


def steps(runs: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """Each step's name and whether it ran as a local activity."""
    return [(r["name"], r["local"]) for r in runs]


def as_bookkeeping_local(names: list[str]) -> list[tuple[str, bool]]:
    """What ``steps`` shows since LOCAL_BOOKKEEPING for steps of these names."""
    return [(n, n not in PAYMENT_STEPS) for n in names]


def test_the_recorded_histories_show_both_orders() -> None:
    old, new = activity_order(BEFORE), activity_order(AFTER)
    assert old.index(Step.CAPTURE_PAYMENT) < old.index(Step.RELEASE_DRIVER)
    assert new.index(Step.RELEASE_DRIVER) < new.index(Step.CAPTURE_PAYMENT)
    assert not has_marker(BEFORE) and has_marker(AFTER)


def force_patch(monkeypatch: pytest.MonkeyPatch, patch_id: str, answer: bool) -> None:
    """Make ``workflow.patched(patch_id)`` answer as code without that guard would."""
    real = workflow.patched
    monkeypatch.setattr(workflow, "patched",
                        lambda pid: answer if pid == patch_id else real(pid))


async def fails_replay(path: Path) -> bool:
    """The recorded history no longer replays: a non-determinism error."""
    [outcome] = await replay_files([path])
    return not outcome.ok and "Nondeterminism" in (outcome.error or "")


async def test_both_histories_replay_against_the_patched_code() -> None:
    outcomes = await replay_files([BEFORE, AFTER])
    assert [o.ok for o in outcomes] == [True, True], [o.error for o in outcomes]


async def test_without_the_guard_the_old_history_would_break(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The change deployed carelessly (always the new order) fails the old rides."""
    force_patch(monkeypatch, RELEASE_BEFORE_CAPTURE, True)
    assert await fails_replay(BEFORE)


async def test_a_new_ride_completes_with_the_driver_released_first(stack: Stack) -> None:
    settings = stack.settings
    city = Scene(Api("", settings.require_jwt_secret(), http=stack.http), 0,
                Timeouts(settings.offer_timeout_s, settings.matching_deadline_s,
                         settings.free_cancel_s))
    ride_id = await happy_path(city)
    types = [e.type for _, e in await ride_history(stack.rt.js, ride_id)]
    assert types[-3:] == ["ride.driver_released", "ride.payment_captured", "ride.completed"]
    history = await stack.temporal.get_workflow_handle(f"ride-{ride_id}").fetch_history()
    assert any(e.HasField("marker_recorded_event_attributes") for e in history.events)
    assert load_history(AFTER).workflow_id == AFTER.stem


# --- the bookkeeping steps as local activities -----------------------------------------------


def test_the_recorded_histories_show_both_kinds_of_steps() -> None:
    names = [Step.QUOTE_FARE, Step.AUTHORIZE_PAYMENT, Step.RESERVE_DRIVER, Step.ASSIGN_DRIVER,
             Step.RELEASE_DRIVER, Step.CAPTURE_PAYMENT, Step.COMPLETE_RIDE]
    for old in (BEFORE, AFTER):
        assert LOCAL_BOOKKEEPING not in patches(recorded(old))
        assert not any(local for _, local in steps(step_runs(recorded(old))))
    new = recorded(LOCAL)
    assert patches(new) == [LOCAL_BOOKKEEPING]  # release-first is implied, no second patch
    runs = step_runs(new)
    assert steps(runs) == as_bookkeeping_local(names)
    assert all(r["summary"] and r["outcome"] == "completed" for r in runs)


@pytest.mark.parametrize(("forced", "path"), [(True, BEFORE), (False, LOCAL)],
                         ids=["old ride, always local", "new ride, never local"])
async def test_without_the_local_bookkeeping_guard_histories_break(
    monkeypatch: pytest.MonkeyPatch, forced: bool, path: Path,
) -> None:
    """The change deployed carelessly (always local) fails the old rides; and the
    histories recorded since pin the new branch (code without it fails them)."""
    force_patch(monkeypatch, LOCAL_BOOKKEEPING, forced)
    assert await fails_replay(path)


NEW_RIDES: dict[Callable[[Scene], Awaitable[str]], list[str]] = {
    happy_path: [Step.QUOTE_FARE, Step.AUTHORIZE_PAYMENT, Step.RESERVE_DRIVER, Step.ASSIGN_DRIVER,
                 Step.RELEASE_DRIVER, Step.CAPTURE_PAYMENT, Step.COMPLETE_RIDE],
    payment_declined: [Step.QUOTE_FARE, Step.AUTHORIZE_PAYMENT, Step.VOID_PAYMENT, Step.FAIL_RIDE],
    rider_cancels_before_assignment: [Step.QUOTE_FARE, Step.AUTHORIZE_PAYMENT, Step.RESERVE_DRIVER,
                                      Step.RELEASE_DRIVER, Step.VOID_PAYMENT, Step.CANCEL_RIDE],
}


@pytest.mark.parametrize("scenario", list(NEW_RIDES), ids=lambda f: f.__name__)
async def test_a_new_ride_runs_its_bookkeeping_steps_as_local_activities(
    stack: Stack, scenario: Callable[[Scene], Awaitable[str]],
) -> None:
    settings = stack.settings
    city = Scene(Api("", settings.require_jwt_secret(), http=stack.http), 0,
                Timeouts(settings.offer_timeout_s, settings.matching_deadline_s,
                         settings.free_cancel_s))
    ride_id = await scenario(city)
    runs = await activity_runs(stack.temporal, ride_id)
    history = await stack.temporal.get_workflow_handle(f"ride-{ride_id}").fetch_history()
    events = list(history.events)

    # the patch is checked first thing: its marker comes before any step's
    markers = [e for e in events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    assert patches(markers[:1]) == [LOCAL_BOOKKEEPING]
    # local-activity markers for the bookkeeping steps, activities for the payment steps
    assert steps(runs) == as_bookkeeping_local(NEW_RIDES[scenario])
    assert all(r["summary"] for r in runs)

    # the trigger set the status and the rider when it started the workflow; the
    # workflow does not upsert them again
    started = events[0].workflow_execution_started_event_attributes
    at_start = {p.key.name: p.value
                for p in decode_typed_search_attributes(started.search_attributes)}
    assert at_start == {"RideStatus": RideStatus.REQUESTED, "RiderId": city.rider}
    upserts = [
        {p.key.name: p.value for p in decode_typed_search_attributes(
            e.upsert_workflow_search_attributes_event_attributes.search_attributes)
         if p.key.name != "TemporalChangeVersion"}  # the SDK's record of the patches
        for e in events
        if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
    ]
    upserts = [u for u in upserts if u]
    assert not any("RiderId" in u or u.get("RideStatus") == "requested" for u in upserts)
    # an assignment's driver and status in one upsert
    assert [u for u in upserts if "DriverId" in u] == (
        [{"DriverId": f"driver-{city.tag}-1", "RideStatus": RideStatus.DRIVER_ASSIGNED}]
        if Step.ASSIGN_DRIVER in NEW_RIDES[scenario] else []
    )


# --- judged on the committed facts -------------------------------------------------------------

FACTS = {name: HISTORIES / f"{name}_committed_facts.json"
         for name in ("happy_path", "offer_timeout_then_accept", "rider_cancels_after_free_window")}


@pytest.mark.parametrize("name", list(FACTS))
async def test_without_the_committed_facts_guard_histories_break(
    monkeypatch: pytest.MonkeyPatch, name: str,
) -> None:
    """The histories recorded since pin the new branch: code without the guard (never
    the new branch) fails them. (The new branch changes what the steps are given and
    decide, not which commands they issue, on these paths; the marker keeps a ride on
    one branch from its start to its end.)"""
    force_patch(monkeypatch, COMMITTED_FACTS, False)
    assert await fails_replay(FACTS[name])


def test_new_histories_name_each_driver_report_and_the_offer_timer() -> None:
    events = recorded(FACTS["offer_timeout_then_accept"])
    signals = [e.workflow_execution_signaled_event_attributes.signal_name
               for e in events if e.HasField("workflow_execution_signaled_event_attributes")]
    assert signals == ["driver_accepted", "driver_arrived", "trip_started", "trip_ended"]
    timers = [e for e in events if e.HasField("timer_started_event_attributes")]
    assert timers and all(e.user_metadata.HasField("summary") for e in timers)
