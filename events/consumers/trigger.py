"""The ``workflow-trigger`` consumer: api events start and steer each ride's workflow.

``ride.requested`` starts the ride's workflow (``workflows.contract``: its type, input
and signal, never its class) with id ``ride-<ride_id>``; a second start of
the same id is a no-op (the id is the idempotency key). Every other api event of a ride
becomes a ``ride_event`` signal; the workflow ignores an event id it has already seen,
so a redelivered message has no second effect. The consumer is ordered, so a ride's
events reach its workflow in the order they were published.
"""

from __future__ import annotations

import logging

from nats.aio.msg import Msg
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from events.catalog import RIDE_COMMANDS, RideRequested
from events.consumer import ConsumerSpec
from events.envelope import CloudEvent
from ridehail.config import Settings
from ridehail.domain.geo import zone_cell
from ridehail.domain.status import RideStatus
from workflows.contract import (
    RIDE_EVENT_SIGNAL,
    RIDE_STATUS,
    RIDER_ID,
    TASK_QUEUE,
    WORKFLOW_TYPE,
    workflow_id,
)
from workflows.types import RideInput, RideOutcome, RideSignal

log = logging.getLogger(__name__)

NAME = "workflow-trigger"


def ride_input(event: RideRequested, settings: Settings) -> RideInput:
    return RideInput(
        ride_id=event.ride_id,
        rider_id=event.rider_id,
        pickup=event.pickup,
        dropoff=event.dropoff,
        quote_id=event.quote_id,
        payment_method=event.payment_method,
        offer_timeout_s=settings.offer_timeout_s,
        matching_deadline_s=settings.matching_deadline_s,
        free_cancel_s=settings.free_cancel_s,
    )


class WorkflowTrigger:
    def __init__(self, client: Client, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    def spec(self) -> ConsumerSpec:
        return ConsumerSpec(name=NAME, stream="RIDES", prefix="rides", handler=self.handle,
                            types=RIDE_COMMANDS)

    async def handle(self, event: CloudEvent, msg: Msg) -> None:
        if event.type == "ride.requested":
            await self.start(event)
        else:
            await self.steer(event)

    async def start(self, event: CloudEvent) -> None:
        requested = event.payload()
        assert isinstance(requested, RideRequested)
        ride = ride_input(requested, self.settings)
        try:
            await self.client.start_workflow(
                WORKFLOW_TYPE,
                ride,
                result_type=RideOutcome,
                id=workflow_id(ride.ride_id),
                task_queue=TASK_QUEUE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=TypedSearchAttributes([
                    SearchAttributePair(RIDE_STATUS, RideStatus.REQUESTED),
                    SearchAttributePair(RIDER_ID, ride.rider_id),
                ]),
                static_summary=(
                    f"Ride {ride.ride_id} for rider {ride.rider_id}: "
                    # the H3 zones (res 7, a few km²), never the exact coordinates
                    f"zone {zone_cell(requested.pickup)} → zone {zone_cell(requested.dropoff)}, "
                    f"paying by {ride.payment_method}"
                ),
            )
        except WorkflowAlreadyStartedError:
            pass  # it ran before and has closed: the start already happened

    async def steer(self, event: CloudEvent) -> None:
        handle = self.client.get_workflow_handle(workflow_id(event.subject))
        signal = RideSignal(event_id=event.id, type=event.type, data=event.data)
        try:
            await handle.signal(RIDE_EVENT_SIGNAL, signal)
        except RPCError as e:
            if e.status != RPCStatusCode.NOT_FOUND:
                raise
            # NOT_FOUND: the workflow has closed (a late answer to an expired offer, say),
            # or it was never started, which ordering rules out unless the requested
            # event was dead-lettered. Either way there is nobody to tell.
            closed = await self._closed(event.subject)
            log.info("%s: %s for ride %s dropped: workflow %s", NAME, event.type,
                     event.subject, "closed" if closed else "not found",
                     extra={"ride_id": event.subject})

    async def _closed(self, ride_id: str) -> bool:
        try:
            desc = await self.client.get_workflow_handle(workflow_id(ride_id)).describe()
        except RPCError:
            return False
        return desc.status != WorkflowExecutionStatus.RUNNING


