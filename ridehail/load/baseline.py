"""The bare-Temporal anchor of ``ridehail bench --baseline``.

A workflow of the same shape as a happy-path ride — the same seven activities in the same
order (``quote_fare``, ``authorize_payment``, ``reserve_driver``, ``assign_driver``,
``capture_payment``, ``release_driver``, ``complete_ride``), the same four ``ride_event``
signals (accept, arrive, start, end) and the same waits (the offer's answer with the offer
timeout, then arrival, start and end) — with no NATS, no database and no API: its
activities return at once. It runs on the same Temporal server as ridehail, on a task
queue of its own, under a worker built with ridehail's worker settings
(``ridehail.processes.worker.build_worker``).

Its driver is a bare Temporal client that answers as soon as the workflow waits: it
starts the workflow with an update that returns once the offer is out
(update-with-start), signals the acceptance, learns the assignment by an update that
returns once the driver is assigned, then signals arrive, start and end, each after the
previous signal was accepted by the server — as ridehail's driver reports each step
after the API accepted the previous one — and waits for the result.

This module is imported into the workflow sandbox: only the standard library, pydantic
and temporalio at the top.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy

if TYPE_CHECKING:
    from temporalio.client import Client
    from temporalio.worker import Worker

TASK_QUEUE = "ridehail-bench-baseline"
WORKFLOW_TYPE = "BaselineRideWorkflow"

# The saga's stages, in order; an update waiting for one returns once it is reached.
STAGES = ("requested", "offered", "driver_assigned", "driver_arrived", "in_progress",
          "completed", "failed")
# The activity timeout and retry policy of ridehail's forward steps (workflows/ride.py).
STEP_TIMEOUT = timedelta(seconds=15)
STEP_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), backoff_coefficient=2.0,
                         maximum_interval=timedelta(seconds=10))
# The happy path's activities, in the order a ride runs them.
STEPS_BEFORE_OFFER = ("quote_fare", "authorize_payment", "reserve_driver")
STEP_ON_ACCEPT = "assign_driver"
STEPS_AFTER_TRIP = ("capture_payment", "release_driver", "complete_ride")
SIGNALS = ("ride.driver_accepted", "ride.driver_arrived", "ride.trip_started",
           "ride.trip_ended")


class BaselineRide(BaseModel):
    ride_id: str
    offer_timeout_s: float = 15
    # the steps run as local activities (the rest as regular ones): ridehail's own choice
    # (ridehail_local_steps) for the same-kind anchor, none for the all-regular one
    local_steps: list[str] = []


class BaselineStep(BaseModel):
    ride_id: str
    step: str


class BaselineDone(BaseModel):
    ride_id: str
    step: str


class BaselineEvent(BaseModel):
    """The twin of ridehail's ``RideSignal``."""

    event_id: str
    type: str


class BaselineOutcome(BaseModel):
    ride_id: str
    status: str


def _activity(name: str) -> Callable[[BaselineStep], Awaitable[BaselineDone]]:
    @activity.defn(name=name)
    async def step(req: BaselineStep) -> BaselineDone:
        return BaselineDone(ride_id=req.ride_id, step=req.step)

    return step


def baseline_activities() -> list[Callable[[BaselineStep], Awaitable[BaselineDone]]]:
    """One activity per happy-path step, each returning at once."""
    return [_activity(n) for n in (*STEPS_BEFORE_OFFER, STEP_ON_ACCEPT, *STEPS_AFTER_TRIP)]


@workflow.defn(name=WORKFLOW_TYPE)
class BaselineRideWorkflow:
    def __init__(self) -> None:
        self._stage = "requested"
        self._inbox: list[str] = []
        self._seen: set[str] = set()

    @workflow.signal(name="ride_event")
    def ride_event(self, event: BaselineEvent) -> None:
        if event.event_id not in self._seen:
            self._seen.add(event.event_id)
            self._inbox.append(event.type)

    @workflow.update
    async def reached(self, stage: str) -> str:
        """Returns once the ride has reached ``stage`` (or failed)."""
        want = STAGES.index(stage)
        await workflow.wait_condition(lambda: STAGES.index(self._stage) >= want)
        return self._stage

    @reached.validator
    def _known_stage(self, stage: str) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")

    @workflow.query(name="status")
    def status(self) -> str:
        return self._stage

    @workflow.run
    async def run(self, ride: BaselineRide) -> BaselineOutcome:
        for name in STEPS_BEFORE_OFFER:
            await self._step(ride, name)
        self._stage = "offered"
        if not await self._wait_for("ride.driver_accepted", ride.offer_timeout_s):
            self._stage = "failed"  # a ride's offer would expire: not part of the workload
            return BaselineOutcome(ride_id=ride.ride_id, status="failed")
        await self._step(ride, STEP_ON_ACCEPT)
        self._stage = "driver_assigned"
        await self._wait_for("ride.driver_arrived")
        self._stage = "driver_arrived"
        await self._wait_for("ride.trip_started")
        self._stage = "in_progress"
        await self._wait_for("ride.trip_ended")
        for name in STEPS_AFTER_TRIP:
            await self._step(ride, name)
        self._stage = "completed"
        return BaselineOutcome(ride_id=ride.ride_id, status="completed")

    async def _step(self, ride: BaselineRide, name: str) -> None:
        req = BaselineStep(ride_id=ride.ride_id, step=name)
        if name in ride.local_steps:
            await workflow.execute_local_activity(
                name, req, result_type=BaselineDone, start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=STEP_RETRY)
        else:
            await workflow.execute_activity(
                name, req, result_type=BaselineDone, start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=STEP_RETRY)

    async def _wait_for(self, kind: str, timeout: float | None = None) -> bool:
        try:
            await workflow.wait_condition(lambda: kind in self._inbox, timeout=timeout)
        except TimeoutError:
            return False
        self._inbox.remove(kind)
        return True


# --- the worker and the driver (run in the bench process, never in the sandbox) ---------

def ridehail_local_steps() -> list[str]:
    """The anchor's steps that ridehail runs as local activities: read from ridehail's
    own step table (workflows.steps), so a change there changes the anchor too."""
    from workflows.steps import runs_locally

    return [n for n in (*STEPS_BEFORE_OFFER, STEP_ON_ACCEPT, *STEPS_AFTER_TRIP)
            if runs_locally(n)]


# Worker options that are tuning, not wiring: copied from ridehail's own worker so the
# anchor runs under the same settings whatever they become.
_WIRING = frozenset({"client", "task_queue", "activities", "workflows", "nexus_service_handlers",
                     "interceptors", "plugins", "identity", "build_id", "deployment_config",
                     "versioning_strategy", "on_fatal_error", "shared_state_manager"})


async def ridehail_worker_settings(client: Client) -> dict[str, Any]:
    """The tuning options of ridehail's worker, read from a worker built by
    ``ridehail.processes.worker.build_worker`` exactly as ridehail builds it. That worker is never
    run; it is built on a connection of its own, because a client refuses a second worker
    on a task queue it already serves (the ``rides`` worker may share ``client``)."""
    from temporalio.client import Client as _Client

    from ridehail.processes.worker import build_worker

    probe = await _Client.connect(client.service_client.config.target_host,
                                  namespace=client.namespace,
                                  data_converter=client.data_converter)
    config = build_worker(probe, None, None).config()  # type: ignore[arg-type]  # settings only: never runs
    return {k: v for k, v in config.items() if k not in _WIRING}


async def build_baseline_worker(client: Client) -> Worker:
    """The anchor's worker: ridehail's worker settings, the anchor's own task queue."""
    from temporalio.worker import Worker as _Worker

    return _Worker(client, task_queue=TASK_QUEUE, workflows=[BaselineRideWorkflow],
                   activities=baseline_activities(), **await ridehail_worker_settings(client))


async def drive_ride(client: Client, ride_id: str, offer_timeout_s: float = 15,
                     local_steps: list[str] | None = None
                     ) -> tuple[float | None, float | None, str]:
    """One anchor ride, answered as soon as the workflow waits. Returns the seconds from
    the start to the assignment and to the end (None if not reached) and the outcome."""
    import time

    from temporalio.client import WithStartWorkflowOperation
    from temporalio.common import WorkflowIDConflictPolicy

    t0 = time.perf_counter()
    start = WithStartWorkflowOperation(
        BaselineRideWorkflow.run,
        BaselineRide(ride_id=ride_id, offer_timeout_s=offer_timeout_s,
                     local_steps=local_steps or []),
        id=f"baseline-{ride_id}", task_queue=TASK_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL)
    await client.execute_update_with_start_workflow(
        BaselineRideWorkflow.reached, "offered", start_workflow_operation=start)
    handle = await start.workflow_handle()

    async def signal(kind: str) -> None:
        await handle.signal(BaselineRideWorkflow.ride_event,
                            BaselineEvent(event_id=f"{ride_id}:{kind}", type=kind))

    await signal(SIGNALS[0])
    stage = await handle.execute_update(BaselineRideWorkflow.reached, "driver_assigned")
    assigned = time.perf_counter() - t0 if stage == "driver_assigned" else None
    if assigned is None:
        return None, None, stage
    for kind in SIGNALS[1:]:
        await signal(kind)
    outcome = await handle.result()
    return assigned, time.perf_counter() - t0, outcome.status
