"""The ``workflow-trigger`` consumer: api events start and steer each ride's workflow.

``ride.requested`` starts the ride's workflow (``workflows.contract``: its type, input
and signals, never its class) with id ``ride-<ride_id>``; a second start of the same id
is a no-op (the id is the idempotency key). Every other api event of a ride becomes a
signal named for its type, carrying the event's id and the time the api committed it;
the workflow ignores an event id it has already seen, so a redelivered message has no
second effect. The consumer is ordered, so a ride's events reach its workflow in the
order they were published.

The workflow's input is what ``ride.requested`` says, and when the api committed it (the
event's ``time``), so no step of the saga reads the database to learn what was asked.

No ride event is dropped. An event whose workflow is not running is sent with
signal-with-start, the ride's input rebuilt from the read model: if the workflow was
never started (its request held up — dead-lettered, say), the event starts it, and the
workflow reads it before its first step (a cancel ends the ride before any hold or
offer); the request, when it comes, then finds the workflow started. Signal-with-start
is one atomic call on the server, so no interleaving of the two can start two sagas or
lose the event. An event for a ride whose workflow has closed is recorded as such (log
and ``ridehail_events_for_closed_rides_total``) and dropped.

Redrive is safe: a ``ride.requested`` for a ride that has ended never starts a new saga
— the reuse policy refuses a closed workflow's id while the server keeps its history,
and the read model's terminal status refuses it after that.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from nats.aio.msg import Msg
from sqlmodel import Session
from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from domain.geo import Point, zone_cell
from domain.status import FINAL, RideStatus
from events.catalog import RIDE_COMMANDS, RideRequested
from events.consumer import ConsumerSpec
from events.envelope import CloudEvent
from events.failures import PermanentError
from events.health import ConsumerHealth
from infra.config import Settings
from store.db import Database
from store.rides import Request, request_of
from store.tables import Ride
from workflows import types as wt
from workflows.contract import (
    RIDE_STATUS,
    RIDER_ID,
    TASK_QUEUE,
    WORKFLOW_TYPE,
    signal_name,
    workflow_id,
)
from workflows.types import RideInput, RideOutcome, RideSignal

log = logging.getLogger(__name__)

NAME = "workflow-trigger"


def ride_input(request: Request, requested_at: datetime, settings: Settings) -> RideInput:
    """The workflow's input: the ride as it was requested, and when (so the saga's steps
    need not read the database for it), with the timings of this deployment."""
    return RideInput(
        ride_id=request.ride_id,
        rider_id=request.rider_id,
        pickup=request.pickup,
        dropoff=request.dropoff,
        quote_id=request.quote_id,
        payment_method=request.payment_method,
        requested_at=requested_at,
        offer_timeout_s=settings.offer_timeout_s,
        matching_deadline_s=settings.matching_deadline_s,
        free_cancel_s=settings.free_cancel_s,
    )


def _zone(p: wt.Point) -> str:
    """The H3 surge zone of a point of the workflow's input."""
    return zone_cell(Point(lat=p.lat, lng=p.lng))


class WorkflowTrigger:
    def __init__(self, client: Client, settings: Settings, db: Database | None = None,
                 health: ConsumerHealth | None = None) -> None:
        self.client = client
        self.settings = settings
        # the read model: whether the ride has ended, and its request for an event
        # that reaches a workflow not running
        self.db = db
        self.health = health

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
        ride = await self._read_model(requested.ride_id)
        if ride is not None and ride.status in FINAL:
            # a redriven request for a ride that has ended (its workflow may be past
            # retention, which the reuse policy cannot see): no new saga
            self._closed(event, f"the ride is {ride.status}")
            return
        try:
            await self._start(ride_input(requested, event.time, self.settings))
        except WorkflowAlreadyStartedError:
            pass  # it ran before and has closed: the start already happened

    async def steer(self, event: CloudEvent) -> None:
        signal = RideSignal(event_id=event.id, type=event.type, data=event.data,
                            time=event.time)
        name = signal_name(event.type)
        try:
            await self.client.get_workflow_handle(workflow_id(event.subject)).signal(name, signal)
            return
        except RPCError as e:
            if e.status != RPCStatusCode.NOT_FOUND:
                raise
        # Not running: closed, or never started. Signal-with-start tells them apart
        # atomically (it refuses a closed workflow's id). This event, not the request,
        # may be what starts the workflow, so its input comes from the read model.
        ride = await self._read_model(event.subject)
        if ride is None:
            raise PermanentError(f"{event.type} for ride {event.subject}, which the database "
                                 "does not know")
        if ride.status in FINAL:
            self._closed(event, f"the ride is {ride.status}")
            return
        request = request_of(ride)
        try:
            await self._start(ride_input(request, request.requested_at, self.settings),
                              start_signal=name, start_signal_args=[signal])
        except WorkflowAlreadyStartedError:
            self._closed(event, "its workflow has closed")
            return
        log.info("%s: %s for ride %s started its workflow (signal-with-start)", NAME,
                 event.type, event.subject, extra={"ride_id": event.subject})

    async def _start(self, ride: RideInput, **signal: Any) -> None:
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
                f"zone {_zone(ride.pickup)} → zone {_zone(ride.dropoff)}, "
                f"paying by {ride.payment_method}"
            ),
            **signal,
        )

    async def _read_model(self, ride_id: str) -> Ride | None:
        if self.db is None:
            return None

        def read(session: Session) -> Ride | None:
            ride = session.get(Ride, ride_id)
            if ride is not None:
                session.expunge(ride)
            return ride

        return await self.db.read(read)

    def _closed(self, event: CloudEvent, why: str) -> None:
        log.info("%s: %s for ride %s dropped: %s", NAME, event.type, event.subject, why,
                 extra={"ride_id": event.subject})
        if self.health is not None:
            self.health.note_late(event.type)
