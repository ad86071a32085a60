"""The saga helper on its own, with tiny workflows on the time-skipping test server:
compensations run newest first, a compensation registered before its step undoes a step
that took effect and then failed, a failing compensation is reported (and logged with the
ride id) while the others still run, and a workflow cancellation — before or during the
compensations — does not stop them."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.support.stack import eventually
from workflows.saga import Saga

QUEUE = "saga-helper-test"
NO_RETRY = RetryPolicy(maximum_attempts=1)


class Plan(BaseModel):
    ride_id: str
    steps: list[str]
    fail_at: str | None = None  # this step takes effect, then fails
    undo_fails: list[str] = []  # these compensations fail
    wait_after_steps: bool = False  # then wait (for a cancellation, or a "fail" signal)
    slow_undo_s: float = 0  # each compensation first waits this long (workflow time)


class Report(BaseModel):
    undone: list[str]
    failures: list[tuple[str, str]]
    pending_before: list[str]


class Ledger:
    """What the activities did, in order: effects and undos."""

    def __init__(self) -> None:
        self.log: list[str] = []

    @activity.defn(name="do_step")
    async def do_step(self, plan_step: list[str]) -> None:
        step, fail = plan_step
        self.log.append(f"did {step}")
        if fail:
            raise ApplicationError(f"{step} failed after taking effect", non_retryable=True)

    @activity.defn(name="undo_step")
    async def undo_step(self, plan_step: list[str]) -> None:
        step, fail = plan_step
        if fail:
            raise ApplicationError(f"cannot undo {step}", non_retryable=True)
        self.log.append(f"undid {step}")


@workflow.defn(sandboxed=False)
class SagaWorkflow:
    def __init__(self) -> None:
        self.phase = "stepping"
        self.fail_now = False

    @workflow.signal
    def fail(self) -> None:
        self.fail_now = True

    @workflow.query
    def current_phase(self) -> str:
        return self.phase

    @workflow.run
    async def run(self, plan: Plan) -> Report:
        saga = Saga(plan.ride_id)
        undone: list[str] = []

        def undo(step: str):  # type: ignore[no-untyped-def]
            async def compensation() -> None:
                if plan.slow_undo_s:
                    await workflow.sleep(plan.slow_undo_s)
                await workflow.execute_activity(
                    "undo_step",
                    [step, "x" if step in plan.undo_fails else ""],
                    start_to_close_timeout=timedelta(seconds=5),
                    retry_policy=NO_RETRY,
                )
                undone.append(step)

            return compensation

        pending: list[str] = []
        try:
            for step in plan.steps:
                saga.add(f"undo {step}", undo(step))  # before the step, as it must be
                await workflow.execute_activity(
                    "do_step",
                    [step, "x" if step == plan.fail_at else ""],
                    start_to_close_timeout=timedelta(seconds=5),
                    retry_policy=NO_RETRY,
                )
            if plan.wait_after_steps:
                await workflow.wait_condition(lambda: self.fail_now)
            raise ApplicationError("a later step failed")
        except (ApplicationError, ActivityError, asyncio.CancelledError):
            pending = saga.pending
            self.phase = "compensating"
            failures = await saga.compensate()
        self.phase = "done"
        return Report(
            undone=undone, failures=[(f.name, f.error) for f in failures], pending_before=pending
        )


@pytest.fixture
async def env(time_skipping: WorkflowEnvironment) -> AsyncIterator[tuple[Client, Ledger]]:
    ledger = Ledger()
    async with Worker(
        time_skipping.client,
        task_queue=QUEUE,
        workflows=[SagaWorkflow],
        activities=[ledger.do_step, ledger.undo_step],
    ):
        yield time_skipping.client, ledger


async def start(client: Client, plan: Plan) -> WorkflowHandle[SagaWorkflow, Report]:
    return await client.start_workflow(
        SagaWorkflow.run, plan, id=f"saga-{uuid.uuid4()}", task_queue=QUEUE
    )


async def test_compensations_run_newest_first(env: tuple[Client, Ledger]) -> None:
    client, ledger = env
    report = await (await start(client, Plan(ride_id="r", steps=["a", "b", "c"]))).result()
    assert report.pending_before == ["undo a", "undo b", "undo c"]
    assert report.undone == ["c", "b", "a"] and report.failures == []
    assert ledger.log == ["did a", "did b", "did c", "undid c", "undid b", "undid a"]


async def test_a_compensation_registered_before_its_step_undoes_a_step_that_failed(
    env: tuple[Client, Ledger],
) -> None:
    client, ledger = env
    plan = Plan(ride_id="r", steps=["a", "b", "c"], fail_at="b")
    report = await (await start(client, plan)).result()
    # b took effect and then failed: it is undone too; c never ran
    assert ledger.log == ["did a", "did b", "undid b", "undid a"]
    assert report.undone == ["b", "a"]


async def test_a_failing_compensation_is_reported_and_the_rest_still_run(
    env: tuple[Client, Ledger],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, ledger = env
    caplog.set_level(logging.ERROR, logger="temporalio.workflow")
    plan = Plan(ride_id="ride-42", steps=["a", "b", "c"], undo_fails=["b"])
    report = await (await start(client, plan)).result()
    assert report.undone == ["c", "a"]
    assert report.failures == [("undo b", "ApplicationError: cannot undo b")]
    assert ledger.log[-2:] == ["undid c", "undid a"]
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("ride-42" in m and "undo b" in m and "cannot undo b" in m for m in logged)


async def test_a_workflow_cancellation_is_compensated(
    env: tuple[Client, Ledger],
    time_skipping: WorkflowEnvironment,
) -> None:
    client, ledger = env
    plan = Plan(ride_id="r", steps=["a", "b"], wait_after_steps=True, slow_undo_s=30)
    handle = await start(client, plan)
    await eventually(lambda: _logged(ledger, "did b"), "the steps to run")
    await handle.cancel()
    report = await handle.result()  # the time-skipping handle skips the slow undos
    assert report.undone == ["b", "a"]
    assert ledger.log[-2:] == ["undid b", "undid a"]


async def test_a_cancellation_during_the_compensations_does_not_stop_them(
    env: tuple[Client, Ledger],
) -> None:
    client, ledger = env
    plan = Plan(ride_id="r", steps=["a", "b", "c"], wait_after_steps=True, slow_undo_s=60)
    handle = await start(client, plan)
    await eventually(lambda: _logged(ledger, "did c"), "the steps to run")
    await handle.signal(SagaWorkflow.fail)

    async def compensating() -> bool:
        return await handle.query(SagaWorkflow.current_phase) == "compensating"

    await eventually(compensating, "the compensations to start")
    # the first compensation is waiting out its minute (time is not skipped meanwhile)
    await handle.cancel()
    report = await handle.result()
    assert report.undone == ["c", "b", "a"] and report.failures == []
    assert ledger.log[-3:] == ["undid c", "undid b", "undid a"]
    desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.COMPLETED


async def _logged(ledger: Ledger, entry: str) -> bool:
    return entry in ledger.log
