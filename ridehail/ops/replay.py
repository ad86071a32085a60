"""``ridehail replay``: replay recorded or live workflow histories against the current
``RideWorkflow`` code, with the worker's data converter, and report any
non-determinism. The pre-deploy gate: a change that would break running rides fails
here before it reaches a worker.

    ridehail replay --dir tests/histories
    ridehail replay --query "WorkflowType='RideWorkflow'"
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.contract import WORKFLOW_TYPE
from workflows.housekeeping import HousekeepingWorkflow
from workflows.ride import RideWorkflow

# the workflows the worker runs (ridehail.processes.worker)
WORKFLOWS: tuple[type, ...] = (RideWorkflow, HousekeepingWorkflow)


@dataclass(frozen=True)
class ReplayOutcome:
    name: str  # the file, or the workflow id of a live history
    workflow_id: str
    run_id: str
    events: int
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def replayer(workflows: Sequence[type] = WORKFLOWS) -> Replayer:
    """A replayer configured as the worker is (same workflows, same data converter)."""
    return Replayer(workflows=list(workflows), data_converter=pydantic_data_converter)


def load_history(path: Path) -> WorkflowHistory:
    """A history as ``temporal workflow show --output json`` writes it. The workflow id
    is not in that JSON; the file is named after it (``ride-<id>.json`` or
    ``<scenario>.json``)."""
    return WorkflowHistory.from_json(path.stem, path.read_text())


def history_files(directory: Path) -> list[Path]:
    files = sorted(directory.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no *.json histories in {directory}")
    return files


async def _replay(items: AsyncIterator[tuple[str, WorkflowHistory]],
                  workflows: Sequence[type]) -> list[ReplayOutcome]:
    outcomes: list[ReplayOutcome] = []
    engine = replayer(workflows)
    async for name, history in items:
        result = await engine.replay_workflow(history, raise_on_replay_failure=False)
        failure = result.replay_failure
        outcomes.append(ReplayOutcome(
            name=name, workflow_id=history.workflow_id, run_id=history.run_id,
            events=len(history.events),
            error=None if failure is None else f"{type(failure).__name__}: {failure}",
        ))
    return outcomes


async def replay_files(paths: Iterable[Path],
                       workflows: Sequence[type] = WORKFLOWS) -> list[ReplayOutcome]:
    async def items() -> AsyncIterator[tuple[str, WorkflowHistory]]:
        for path in paths:
            yield path.name, load_history(path)

    return await _replay(items(), workflows)


async def replay_live(client: Client, query: str = f"WorkflowType='{WORKFLOW_TYPE}'",
                      limit: int | None = None,
                      workflows: Sequence[type] = WORKFLOWS) -> list[ReplayOutcome]:
    """Replay the histories of the workflows ``query`` finds on a live server."""

    async def items() -> AsyncIterator[tuple[str, WorkflowHistory]]:
        n = 0
        async for wf in client.list_workflows(query):
            if limit is not None and n >= limit:
                return
            n += 1
            handle = client.get_workflow_handle(wf.id, run_id=wf.run_id)
            yield wf.id, await handle.fetch_history()

    return await _replay(items(), workflows)
