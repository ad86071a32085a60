"""The chaos suite's judgement of a ride's end against what its people did."""

from __future__ import annotations

from ridehail.load.chaos.suite import Fault, faults, judge
from ridehail.load.chaos.workload import RideRecord


def ride(plan: str, status: str, **kw: object) -> RideRecord:
    rec = RideRecord(plan, "rider", ride_id="r1")
    fare = {"final": kw.pop("final", None), "cancellation_fee": kw.pop("fee", None)}
    pay = {"authorized": kw.pop("authorized", "12.00"), "captured": kw.pop("captured", "0.00")}
    rec.final = {"status": status, "fare": fare, "payment": pay,
                 "failure_reason": kw.pop("reason", None)}
    for k, v in kw.items():
        setattr(rec, k, v)
    return rec


def test_a_completed_trip_is_consistent() -> None:
    assert judge(ride("complete", "completed", final="7.96", captured="7.96",
                      completed_report=True)) == []


def test_a_trip_the_driver_completed_must_end_completed() -> None:
    [v] = judge(ride("complete", "failed", reason="no_driver_available",
                     completed_report=True))
    assert "the driver completed the trip but the ride is failed" in v


def test_a_fee_inside_the_free_window_is_a_violation() -> None:
    [v] = judge(ride("rider_cancel_free", "cancelled", fee="5.00", captured="5.00",
                     rider_cancelled=True))
    assert "not due" in v
    assert judge(ride("rider_cancel_late", "cancelled", fee="5.00", captured="5.00",
                      rider_cancelled=True)) == []


def test_unfinished_and_double_charged_rides_are_violations() -> None:
    assert "not finished" in judge(ride("complete", "matching"))[0]
    assert any("captured 20.0 > authorized 12.0" in v for v in judge(
        ride("complete", "completed", final="20.00", captured="20.00",
             completed_report=True)))


def test_a_cancel_nobody_asked_for_is_a_violation() -> None:
    assert "never cancelled" in judge(ride("complete", "cancelled"))[0]


def test_the_quick_suite_has_every_fault_kind_once() -> None:
    quick = faults(quick=True)
    assert {f.kind for f in quick} == {"kill", "stop", "restart"}
    assert {f.target for f in quick} >= {"api", "worker", "consumers", "relay", "nats-0",
                                         "temporal", "postgres", "nats-1"}
    assert len(faults(quick=False)) == len(quick) + 4  # 60 s and 180 s stalls too
    assert Fault("stop", "temporal", 60).name == "SIGSTOP temporal 60s"
