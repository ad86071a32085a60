"""How the ride's workflow runs an activity: timeouts, retry policies, cancellation, and
what a step's final failure means for the ride."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import CancelledError as TemporalCancelledError

PAYMENT_DECLINED = "PaymentDeclined"  # the error type of a declined card
STEP_TIMEOUT = timedelta(seconds=15)

# Forward steps retry until they succeed: a transient outage (database, NATS, the
# payment gateway) must not end a ride. A declined card is a business answer, not an
# outage: never retried.
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=[PAYMENT_DECLINED],
)
# Compensations retry too, but give up after a bound (about 15 s of trying) so that one
# that cannot succeed is surfaced — the ride ends failed/compensation_failed — instead
# of leaving the ride open forever.
COMPENSATION_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=8,
)


async def run_step(
    name: str,
    arg: BaseModel,
    result_type: type[BaseModel] | None = None,
    *,
    summary: str,
    compensation: bool = False,
    optional: bool = False,
) -> Any:
    """Run activity ``name``; ``optional`` when it may answer None, ``summary`` for the
    history in the Temporal UI."""
    expected: Any = result_type
    if optional and result_type is not None:
        expected = result_type | None
    return await workflow.execute_activity(
        name,
        arg,
        result_type=expected,
        start_to_close_timeout=STEP_TIMEOUT,
        retry_policy=COMPENSATION_RETRY if compensation else STEP_RETRY,
        # On a workflow cancellation, wait for a running step to finish before
        # compensating: a capture still in flight must be seen by the refund.
        cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        summary=summary,
    )


def failure_of(e: ActivityError) -> tuple[str, str | None]:
    """The ride's failure reason and detail when a forward step failed for good."""
    cause = e.cause
    if isinstance(cause, ApplicationError) and cause.type == PAYMENT_DECLINED:
        return "payment_declined", cause.message
    if isinstance(cause, TemporalCancelledError):
        return "workflow_cancelled", "the workflow was cancelled"
    return "step_failed", f"{e.activity_type}: {cause or e}"
