"""The Temporal worker: RideWorkflow and the saga's activities on task queue ``rides``,
and housekeeping: HousekeepingWorkflow and its ``prune`` activity, started by the
schedule ``ridehail-housekeeping``, which the worker creates or updates when it starts."""

from __future__ import annotations

import asyncio
import compileall
import logging
from datetime import timedelta
from pathlib import Path

from temporalio import activity
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    Worker,
)

import workflows.ride
from activities import build_activities
from activities.housekeeping import HousekeepingActivities
from events.outbox import Outbox
from infra.config import Settings
from infra.logs import ride_context
from store.db import Database
from workflows.contract import TASK_QUEUE
from workflows.housekeeping import SCHEDULE_ID, HousekeepingWorkflow
from workflows.ride import RideWorkflow

log = logging.getLogger(__name__)


def compile_workflow_modules() -> None:
    """Write the workflow modules' bytecode once. The sandbox imports them afresh for
    every ride; without a bytecode cache (PYTHONDONTWRITEBYTECODE) each import would
    compile the source again."""
    compileall.compile_dir(str(Path(workflows.ride.__file__).parent), quiet=1)


class RideLogContext(Interceptor):
    """An activity's log lines carry the id of the ride whose workflow runs it."""

    def intercept_activity(self, next: ActivityInboundInterceptor
                           ) -> ActivityInboundInterceptor:
        return _RideActivity(next)


class _RideActivity(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> object:
        workflow = activity.info().workflow_id or ""
        with ride_context(workflow.removeprefix("ride-") if workflow.startswith("ride-")
                          else None):
            return await self.next.execute_activity(input)


def build_worker(client: Client, db: Database, outbox: Outbox,
                 settings: Settings | None = None) -> Worker:
    """The worker: the saga's workflow and activities, and housekeeping's, which prunes
    with the lifetimes of ``settings`` (the environment's when None)."""
    compile_workflow_modules()
    settings = settings or Settings()
    housekeeping = HousekeepingActivities(db, settings)
    return Worker(
        client,
        task_queue=TASK_QUEUE,
        workflows=[RideWorkflow, HousekeepingWorkflow],
        activities=[*build_activities(db, outbox, settings.max_trip_km), housekeeping.prune],
        interceptors=[RideLogContext()],
        max_concurrent_activities=64,
        graceful_shutdown_timeout=timedelta(seconds=10),
        # A workflow task waits this long for the worker that has the ride cached before
        # any worker may take it: short, so a crashed worker's rides move on quickly.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=3),
    )


async def run_worker(worker: Worker, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set, then let in-flight activities finish and shut down."""
    task = asyncio.create_task(worker.run())
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if task not in done:
        await worker.shutdown()
    stopper.cancel()
    await task


def housekeeping_schedule(every_s: float, state: ScheduleState | None = None) -> Schedule:
    """The schedule that starts HousekeepingWorkflow every ``every_s`` seconds on the
    worker's task queue: a run is skipped while the previous one still goes, and only the
    latest run missed while the server was away is made up for."""
    every = timedelta(seconds=every_s)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            HousekeepingWorkflow.run, id=SCHEDULE_ID, task_queue=TASK_QUEUE,
            static_summary="ridehail housekeeping: delete the rows past their lifetime"),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP,
                              catchup_window=max(every, timedelta(minutes=1))),
        state=state or ScheduleState(
            note="created by the ridehail worker; RIDEHAIL_PRUNE_EVERY_S sets how often"),
    )


async def ensure_housekeeping_schedule(client: Client, every_s: float) -> None:
    """Create the housekeeping schedule, or bring an existing one to ``every_s`` and the
    current workflow, keeping its state (an operator's pause holds across restarts).
    Every worker does this when it starts; concurrent starts agree."""
    try:
        await client.create_schedule(SCHEDULE_ID, housekeeping_schedule(every_s))
        return
    except ScheduleAlreadyRunningError:
        pass

    def update(current: ScheduleUpdateInput) -> ScheduleUpdate:
        state = current.description.schedule.state
        return ScheduleUpdate(schedule=housekeeping_schedule(every_s, state))

    await client.get_schedule_handle(SCHEDULE_ID).update(update)


async def schedule_housekeeping(client: Client, every_s: float) -> None:
    """``ensure_housekeeping_schedule``, logging instead of failing: the worker runs the
    rides whether or not the schedule could be made, and says so."""
    try:
        await ensure_housekeeping_schedule(client, every_s)
    except Exception as e:  # noqa: BLE001 — rides go on; the log says what to do
        log.error("housekeeping is not scheduled (%s: %s): tables that grow with traffic "
                  "are not pruned until a worker starts that can create the schedule %s; "
                  "`ridehail prune` prunes them once by hand", type(e).__name__, e,
                  SCHEDULE_ID)
