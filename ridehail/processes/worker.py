"""The Temporal worker: RideWorkflow and the saga's activities on task queue ``rides``."""

from __future__ import annotations

import asyncio
import compileall
from datetime import timedelta
from pathlib import Path

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    Worker,
)

import workflows.ride
from activities import build_activities
from events.outbox import Outbox
from infra.logs import ride_context
from store.db import Database
from workflows.contract import TASK_QUEUE
from workflows.ride import RideWorkflow


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


def build_worker(client: Client, db: Database, outbox: Outbox) -> Worker:
    compile_workflow_modules()
    return Worker(
        client,
        task_queue=TASK_QUEUE,
        workflows=[RideWorkflow],
        activities=build_activities(db, outbox),
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
