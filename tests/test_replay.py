"""Replay tests: every recorded history in tests/histories must replay against the
current RideWorkflow, with the worker's data converter. A history that no longer
replays means the change would break rides already running: use workflow.patched()
(docs/VERSIONING.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio import workflow

from ridehail.replay import history_files, replay_files
from workflows.ride import RideWorkflow
from workflows.types import RideInput, RideOutcome

HISTORIES = Path(__file__).parent / "histories"
FILES = sorted(HISTORIES.glob("*.json"))


def test_there_are_histories_for_every_saga_path() -> None:
    from ridehail.scenarios import SCENARIOS

    recorded = {f.stem for f in FILES}
    assert set(SCENARIOS) <= recorded, f"not recorded: {set(SCENARIOS) - recorded}"


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
async def test_history_replays(path: Path) -> None:
    [outcome] = await replay_files([path])
    assert outcome.ok, f"{path.name} no longer replays: {outcome.error}"
    assert outcome.events > 10


@workflow.defn(name="RideWorkflow")
class StartsWithATimer(RideWorkflow):
    """A careless change: a timer before the first activity."""

    @workflow.run
    async def run(self, ride: RideInput) -> RideOutcome:
        await workflow.sleep(1)
        return await super().run(ride)


async def test_replay_catches_a_non_deterministic_change() -> None:
    outcomes = await replay_files(history_files(HISTORIES), workflows=[StartsWithATimer])
    assert outcomes and all(not o.ok for o in outcomes)
    assert all("Nondeterminism" in (o.error or "") for o in outcomes), outcomes[0].error
