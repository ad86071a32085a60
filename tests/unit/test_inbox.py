"""The workflow's inbox: what the ride has heard from the api, waiting to be acted on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from workflows.inbox import CANCELLATION_REQUESTED, CancelRequest, Inbox
from workflows.types import RideSignal

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def signal(event_id: str, type_: str, **data: Any) -> RideSignal:
    return RideSignal(event_id=event_id, type=type_, data=data)


def cancel(event_id: str, by_role: str, by_id: str, reason: str | None = None) -> RideSignal:
    data: dict[str, Any] = {"by_role": by_role, "by_id": by_id}
    if reason is not None:
        data["reason"] = reason
    return signal(event_id, CANCELLATION_REQUESTED, **data)


def accepted(offer_id: str) -> Any:
    return lambda e: e.type == "ride.driver_accepted" and e.data.get("offer_id") == offer_id


def test_an_event_waits_until_taken_and_is_taken_once() -> None:
    inbox = Inbox()
    inbox.receive(signal("e1", "ride.driver_accepted", offer_id="o1"), T0)
    assert inbox.find(accepted("o1")) is not None
    assert inbox.find(accepted("o1")) is not None  # find leaves it there
    taken = inbox.take(accepted("o1"))
    assert taken is not None and taken.event_id == "e1"
    assert inbox.take(accepted("o1")) is None


def test_nothing_matches_what_was_not_heard() -> None:
    inbox = Inbox()
    inbox.receive(signal("e1", "ride.driver_accepted", offer_id="o1"), T0)
    assert inbox.find(accepted("o2")) is None
    assert inbox.take(accepted("o2")) is None
    assert inbox.take(accepted("o1")) is not None  # the other one is still there


def test_the_first_matching_event_is_taken_first() -> None:
    inbox = Inbox()
    inbox.receive(signal("e1", "ride.driver_arrived", driver_id="d1"), T0)
    inbox.receive(signal("e2", "ride.driver_arrived", driver_id="d1"), T0)
    first = inbox.take(lambda e: e.type == "ride.driver_arrived")
    assert first is not None and first.event_id == "e1"


def test_a_redelivered_event_has_no_second_effect() -> None:
    inbox = Inbox()
    inbox.receive(signal("e1", "ride.driver_accepted", offer_id="o1"), T0)
    inbox.receive(signal("e1", "ride.driver_accepted", offer_id="o1"), T0)
    assert inbox.take(accepted("o1")) is not None
    assert inbox.take(accepted("o1")) is None
    inbox.receive(signal("e1", "ride.driver_accepted", offer_id="o1"), T0)  # after taking
    assert inbox.find(accepted("o1")) is None


def test_a_cancellation_is_kept_apart_with_when_the_workflow_heard_it() -> None:
    inbox = Inbox()
    inbox.receive(cancel("c1", "rider", "r1", "changed plans"), T0)
    assert inbox.find(lambda e: True) is None  # not an event to wait for
    assert inbox.live_cancel(None) == CancelRequest("rider", "r1", "changed plans", T0)


def test_a_cancellation_without_a_role_is_the_riders() -> None:
    inbox = Inbox()
    inbox.receive(signal("c1", CANCELLATION_REQUESTED), T0)
    assert inbox.live_cancel(None) == CancelRequest("rider", "", None, T0)


def test_a_repeated_cancellation_is_dropped_like_any_redelivery() -> None:
    inbox = Inbox()
    inbox.receive(cancel("c1", "rider", "r1"), T0)
    inbox.receive(cancel("c1", "rider", "r1"), T0 + timedelta(seconds=5))
    assert inbox.live_cancel(None) is not None
    assert inbox.live_cancel(None).at == T0  # type: ignore[union-attr]


def test_a_drivers_cancellation_applies_only_while_they_hold_the_ride() -> None:
    inbox = Inbox()
    inbox.receive(cancel("c1", "driver", "d1"), T0)
    assert inbox.live_cancel(None) is None  # no driver assigned
    assert inbox.live_cancel("d2") is None  # another driver holds the ride
    assert inbox.live_cancel("d1") == CancelRequest("driver", "d1", None, T0)


def test_a_driver_who_backed_out_cannot_cancel_the_rematched_ride() -> None:
    inbox = Inbox()
    inbox.receive(cancel("c1", "driver", "d1"), T0)
    inbox.forget_driver_cancels("d1")
    assert inbox.live_cancel("d1") is None
    inbox.receive(cancel("c2", "driver", "d1"), T0)  # a new request from them counts
    assert inbox.live_cancel("d1") is not None


def test_forgetting_a_drivers_cancellations_keeps_everyone_elses() -> None:
    inbox = Inbox()
    inbox.receive(cancel("c1", "driver", "d1"), T0)
    inbox.receive(cancel("c2", "driver", "d2"), T0)
    inbox.receive(cancel("c3", "admin", "a1"), T0)
    inbox.forget_driver_cancels("d1")
    assert inbox.live_cancel("d2") == CancelRequest("driver", "d2", None, T0)
    assert inbox.live_cancel("d1") == CancelRequest("admin", "a1", None, T0)


def test_admin_and_rider_cancellations_apply_whoever_drives() -> None:
    inbox = Inbox()
    inbox.receive(cancel("c1", "admin", "a1"), T0)
    assert inbox.live_cancel(None) is not None
    assert inbox.live_cancel("d9") is not None
