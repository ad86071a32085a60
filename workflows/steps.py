"""How the ride's workflow runs an activity: timeouts, retry policies, cancellation,
local or not, and what a step's final failure means for the ride.

Steps that talk to the payment gateway are ordinary activities: in production the
gateway is another company's service, with its own latency and outages, and the server
schedules its retries and shows every attempt. Every other step is ridehail's own
bookkeeping — a database transaction of a few milliseconds and the events it publishes
— and runs as a *local* activity: in the worker that runs the workflow, within the same
workflow task, recorded as one marker instead of a scheduled/started/completed triple
and a workflow task round trip through the server. Both kinds are retried with the same
policy and run at least once, so both are idempotent (keyed on the ride and step)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar, overload

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import CancelledError as TemporalCancelledError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

from workflows.contract import PAYMENT_DECLINED, Step

STEP_TIMEOUT = timedelta(seconds=15)

R = TypeVar("R", bound=BaseModel)

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


# The steps that call the payment gateway: never local.
GATEWAY_STEPS = frozenset(
    {
        Step.AUTHORIZE_PAYMENT,
        Step.CAPTURE_PAYMENT,
        Step.VOID_PAYMENT,
        Step.REFUND_PAYMENT,
        Step.CHARGE_CANCELLATION_FEE,
    }
)


def runs_locally(name: str) -> bool:
    """Whether a ride (on the local-steps patch) runs this step as a local activity: every
    step but the payment gateway's. The bench's anchor reads it too."""
    return Step(name) not in GATEWAY_STEPS


@dataclass(frozen=True)
class StepRunner:
    """Runs the ride's steps. ``local``: the ride runs its bookkeeping steps (every step
    but the payment gateway's) as local activities — ``Patches.local_steps``, decided
    where the ride starts."""

    local: bool

    @overload
    async def __call__(
        self, name: Step, arg: BaseModel, result_type: type[R], *, summary: str,
        compensation: bool = ..., optional: Literal[False] = ...,
    ) -> R: ...
    @overload
    async def __call__(
        self, name: Step, arg: BaseModel, result_type: type[R], *, summary: str,
        compensation: bool = ..., optional: Literal[True],
    ) -> R | None: ...
    @overload
    async def __call__(
        self, name: Step, arg: BaseModel, result_type: None = ..., *, summary: str,
        compensation: bool = ...,
    ) -> None: ...
    async def __call__(
        self,
        name: Step,
        arg: BaseModel,
        result_type: type[R] | None = None,
        *,
        summary: str,
        compensation: bool = False,
        optional: bool = False,
    ) -> R | None:
        """Run activity ``name``; ``optional`` when it may answer None, ``summary`` for
        the history in the Temporal UI, ``compensation`` for the bounded retries."""
        expected: Any = result_type
        if optional and result_type is not None:
            expected = result_type | None
        options: dict[str, Any] = dict(
            result_type=expected,
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=COMPENSATION_RETRY if compensation else STEP_RETRY,
            # On a workflow cancellation, wait for a running step to finish before
            # compensating: a capture still in flight must be seen by the refund.
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=summary,
        )
        activity = name.value  # the plain string the history records
        if not self.local or not runs_locally(name):
            result: R | None = await workflow.execute_activity(activity, arg, **options)
            return result
        try:
            result = await workflow.execute_local_activity(activity, arg, **options)
            return result
        except (ApplicationError, TemporalTimeoutError) as e:
            # A local activity's final failure arrives unwrapped; wrap it as a regular
            # activity's is, so that the saga handles both alike and names the step.
            raise ActivityError(
                f"local activity {activity} failed",
                scheduled_event_id=0,
                started_event_id=0,
                identity="",
                activity_type=activity,
                activity_id="",
                retry_state=None,
            ) from e


def failure_of(e: ActivityError) -> tuple[str, str | None]:
    """The ride's failure reason and detail when a forward step failed for good."""
    cause = e.cause
    if isinstance(cause, ApplicationError) and cause.type == PAYMENT_DECLINED:
        return "payment_declined", cause.message
    if isinstance(cause, TemporalCancelledError):
        return "workflow_cancelled", "the workflow was cancelled"
    return "step_failed", f"{e.activity_type}: {cause or e}"
