"""RideWorkflow's contract: every name the outside world uses to reach the workflow, and
the names its history records. The trigger, the worker, the activities and the
operations tools depend on this module, never on the workflow class.

Changing a value here changes the recorded histories (docs/VERSIONING.md): these are
names, not labels.
"""

from __future__ import annotations

from enum import StrEnum

from temporalio.common import SearchAttributeKey

TASK_QUEUE = "rides"
WORKFLOW_TYPE = "RideWorkflow"
# Every signal takes a workflows.types.RideSignal. Each kind of api event has a signal
# of its own, so a history reads without expanding its events; ``ride_event`` (any kind)
# is what triggers before 0.3 sent, still accepted.
RIDE_EVENT_SIGNAL = "ride_event"
EVENT_SIGNALS = {
    "ride.cancellation_requested": "cancellation_requested",
    "ride.driver_accepted": "driver_accepted",
    "ride.driver_declined": "driver_declined",
    "ride.driver_arrived": "driver_arrived",
    "ride.trip_started": "trip_started",
    "ride.trip_ended": "trip_ended",
}
STATUS_QUERY = "status"  # answers the ride's RideStatus

# Search attributes (registered on the server by ``ridehail dev`` and by deploy/temporal)
RIDE_STATUS = SearchAttributeKey.for_keyword("RideStatus")
RIDER_ID = SearchAttributeKey.for_keyword("RiderId")
DRIVER_ID = SearchAttributeKey.for_keyword("DriverId")

# The error type of a declined card: a business answer the workflow never retries.
PAYMENT_DECLINED = "PaymentDeclined"


def workflow_id(ride_id: str) -> str:
    return f"ride-{ride_id}"


def signal_name(event_type: str) -> str:
    """The signal that carries an api event of this type to the ride's workflow."""
    return EVENT_SIGNALS.get(event_type, RIDE_EVENT_SIGNAL)


class Step(StrEnum):
    """The saga's steps: each is an activity of this name, as the history records it."""

    QUOTE_FARE = "quote_fare"
    AUTHORIZE_PAYMENT = "authorize_payment"
    VOID_PAYMENT = "void_payment"
    CAPTURE_PAYMENT = "capture_payment"
    REFUND_PAYMENT = "refund_payment"
    CHARGE_CANCELLATION_FEE = "charge_cancellation_fee"
    RESERVE_DRIVER = "reserve_driver"
    EXPIRE_OFFER = "expire_offer"
    DECLINE_OFFER = "decline_offer"
    ASSIGN_DRIVER = "assign_driver"
    RELEASE_DRIVER = "release_driver"
    COMPLETE_RIDE = "complete_ride"
    CANCEL_RIDE = "cancel_ride"
    FAIL_RIDE = "fail_ride"
