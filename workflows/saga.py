"""A saga: compensations registered before their steps, run in reverse when needed.

Each compensation is registered *before* the step it undoes runs, because a step can
take effect and still fail to report it (a timeout after the charge went through).
Compensations must therefore be safe to run when their step never happened; ridehail's
are keyed on the ride and look at the ledger or the driver's row before acting.

``compensate()`` runs them newest first in a task of its own, so a cancellation of the
workflow (which Temporal delivers to the workflow's main task) cannot interrupt them,
and never swallows a failure: it goes on through the list and returns every failure for
the caller to surface. Retrying a failing compensation is the job of its activity's
retry policy; what reaches the saga has already been retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError

Compensation = Callable[[], Awaitable[object]]
T = TypeVar("T")


async def shielded(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to its end even if the caller is cancelled meanwhile.

    Temporal delivers a workflow cancellation to the task awaiting at that moment; a
    task of its own is out of its reach, and ``shield`` keeps the caller from cancelling
    it on the way out. The cancellation is absorbed here: code that runs shielded is the
    code a cancellation must not stop (compensating, recording how the ride ended).
    """
    task = asyncio.ensure_future(work)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                return task.result()


@dataclass(frozen=True)
class CompensationFailure:
    name: str
    error: str


@dataclass
class Saga:
    ride_id: str
    _steps: list[tuple[str, Compensation]] = field(default_factory=list)

    def add(self, name: str, compensation: Compensation) -> None:
        """Register ``compensation`` under ``name``, before running the step it undoes.
        A name registered again keeps its first place in the order and its newest
        function."""
        for i, (existing, _) in enumerate(self._steps):
            if existing == name:
                self._steps[i] = (name, compensation)
                return
        self._steps.append((name, compensation))

    def discard(self, name: str) -> None:
        """Forget a compensation whose step no longer needs undoing."""
        self._steps = [(n, c) for n, c in self._steps if n != name]

    @property
    def pending(self) -> list[str]:
        """The registered compensations, oldest first."""
        return [n for n, _ in self._steps]

    async def compensate(self) -> list[CompensationFailure]:
        """Run every registered compensation, newest first, shielded from cancellation;
        returns the failures (each already logged with the ride id)."""
        return await shielded(self._run_all())

    async def _run_all(self) -> list[CompensationFailure]:
        failures: list[CompensationFailure] = []
        while self._steps:
            name, compensation = self._steps.pop()
            try:
                await compensation()
            except Exception as e:  # noqa: BLE001 — reported to the caller, never dropped
                failures.append(self._failed(name, e))
        return failures

    def _failed(self, name: str, error: BaseException) -> CompensationFailure:
        # an activity's failure wraps the error that made it fail; report that one
        cause = error.cause if isinstance(error, ActivityError) and error.cause else error
        workflow.logger.error(
            "ride %s: compensation %r failed after its retries: %s", self.ride_id, name, cause
        )
        return CompensationFailure(name, f"{type(cause).__name__}: {cause}")
