"""Replay tests: every recorded history in tests/histories must replay against the
current RideWorkflow, with the worker's data converter. A history that no longer
replays means the change would break rides already running: use workflow.patched()
(docs/VERSIONING.md).

Every saga path is recorded three times: ``<scenario>.json`` from before the bookkeeping
steps ran as local activities (those rides replay down the old branch),
``<scenario>_local_steps.json`` from after, and ``<scenario>_committed_facts.json`` from
since the ride is judged on the facts the api committed (the branch every new ride
takes: event times, the trip meter, per-type signal names)."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio import workflow

from ridehail.ops.replay import history_files, replay_files
from tests.support.histories import patches, recorded
from workflows.patches import COMMITTED_FACTS, LOCAL_BOOKKEEPING
from workflows.ride import RideWorkflow
from workflows.types import RideInput, RideOutcome

HISTORIES = Path(__file__).parents[1] / "histories"
FILES = sorted(HISTORIES.glob("*.json"))
LOCAL_STEPS = "_local_steps"  # the suffix of the histories recorded with local steps
FACTS = "_committed_facts"  # ... and of those recorded since COMMITTED_FACTS


def test_there_are_histories_for_every_saga_path_on_both_branches() -> None:
    from ridehail.load.scenarios import SCENARIOS  # not at the top: the sandbox imports this module

    on_file = {f.stem for f in FILES}
    for suffix in ("", LOCAL_STEPS, FACTS):
        wanted = {f"{name}{suffix}" for name in SCENARIOS}
        assert wanted <= on_file, f"not recorded: {sorted(wanted - on_file)}"
    for name in SCENARIOS:
        assert LOCAL_BOOKKEEPING not in patches(recorded(HISTORIES / f"{name}.json"))
        assert patches(recorded(HISTORIES / f"{name}{LOCAL_STEPS}.json")) == [LOCAL_BOOKKEEPING]
        assert patches(recorded(HISTORIES / f"{name}{FACTS}.json")) == [LOCAL_BOOKKEEPING,
                                                                        COMMITTED_FACTS]


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
