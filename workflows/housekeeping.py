"""HousekeepingWorkflow: one run of housekeeping, started by the Temporal Schedule
``ridehail-housekeeping`` every ``RIDEHAIL_PRUNE_EVERY_S`` (the worker creates or updates
the schedule when it starts). It runs the ``prune`` activity, which on PostgreSQL makes
the event log's partitions for the coming months, then deletes the rows past their
lifetime from the tables that grow with traffic (``store.prune``), and returns what it
removed, by store, and the partitions it made.

Deterministic and small: the work and its batches are the activity's; the workflow only
retries it. The activity is idempotent (it deletes what is past its lifetime, whatever
an earlier attempt did), so a retry after a kill in the middle carries on where the
killed attempt stopped. The schedule skips a run while the previous one is still going.

These are names (CONTRACT.md section 4): the schedule's id, the workflow's type and the
activity's name are what the Temporal UI shows and what histories record.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import RetryPolicy

SCHEDULE_ID = "ridehail-housekeeping"
WORKFLOW_TYPE = "HousekeepingWorkflow"
PRUNE_ACTIVITY = "prune"

# A run over a table that was never pruned may take long; the attempt says it is alive
# after each batch (a heartbeat), so one that died is retried within the heartbeat timeout.
PRUNE_TIMEOUT = timedelta(hours=1)
PRUNE_HEARTBEAT = timedelta(minutes=2)
PRUNE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=10,  # then the run fails, visibly; the next one tries again
)


class PruneRequest(BaseModel):
    """What one run of ``prune`` is asked to do: ``dry_run`` counts and deletes nothing."""

    dry_run: bool = False


class PruneReport(BaseModel):
    """What a run of ``prune`` removed (or, on a dry run, would remove), by store, with
    the lifetime each store kept (seconds), how long the run took, and the event log's
    monthly partitions it made (PostgreSQL; none on a dry run)."""

    dry_run: bool = False
    removed: dict[str, int] = Field(default_factory=dict)
    keep_s: dict[str, float] = Field(default_factory=dict)
    seconds: float = 0.0
    partitions_made: list[str] = Field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.removed.values())


@workflow.defn(name=WORKFLOW_TYPE)
class HousekeepingWorkflow:
    """One run of housekeeping: the ``prune`` activity, retried until it succeeds or
    ``PRUNE_RETRY`` gives up."""

    @workflow.run
    async def run(self, request: PruneRequest | None = None) -> PruneReport:
        report: PruneReport = await workflow.execute_activity(
            PRUNE_ACTIVITY,
            request or PruneRequest(),
            result_type=PruneReport,
            start_to_close_timeout=PRUNE_TIMEOUT,
            heartbeat_timeout=PRUNE_HEARTBEAT,
            retry_policy=PRUNE_RETRY,
            summary="delete the rows past their lifetime, store by store",
        )
        return report
