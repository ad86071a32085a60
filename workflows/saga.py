"""A saga: compensations registered before their steps, run in reverse when needed.

Each compensation is registered *before* the step it undoes runs, because a step can
take effect and still fail to report it (a timeout after the charge went through).
Compensations must therefore be safe to run when their step never happened; ridehail's
are keyed on the ride and look at the ledger or the driver's row before acting.

``compensate()`` runs them newest first, each in its own task so a cancellation of the
workflow cannot interrupt it, and never swallows a failure: it keeps going through the
list and returns every failure for the caller to surface.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from temporalio import workflow

Compensation = Callable[[], Awaitable[object]]


@dataclass
class CompensationFailure:
    name: str
    error: str


@dataclass
class Saga:
    ride_id: str
    _steps: list[tuple[str, Compensation]] = field(default_factory=list)

    def add(self, name: str, compensation: Compensation) -> None:
        """Register ``compensation`` under ``name``; a name registered again keeps its
        first place in the order and its newest function."""
        for i, (existing, _) in enumerate(self._steps):
            if existing == name:
                self._steps[i] = (name, compensation)
                return
        self._steps.append((name, compensation))

    def discard(self, name: str) -> None:
        """Forget a compensation whose step can no longer be undone this way."""
        self._steps = [(n, c) for n, c in self._steps if n != name]

    @property
    def pending(self) -> list[str]:
        return [n for n, _ in self._steps]

    async def compensate(self) -> list[CompensationFailure]:
        failures: list[CompensationFailure] = []
        while self._steps:
            name, compensation = self._steps.pop()
            # A fresh task is not cancelled with the workflow's main task; shielding it
            # lets the compensation finish even if this coroutine is cancelled meanwhile.
            task = asyncio.ensure_future(compensation())
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                try:
                    await task
                except BaseException as e:  # noqa: BLE001
                    failures.append(self._failed(name, e))
            except Exception as e:  # noqa: BLE001 — reported to the caller, never dropped
                failures.append(self._failed(name, e))
        return failures

    def _failed(self, name: str, error: BaseException) -> CompensationFailure:
        cause = getattr(error, "cause", None) or error
        workflow.logger.error(
            "ride %s: compensation %s failed: %s", self.ride_id, name, cause
        )
        return CompensationFailure(name, f"{type(cause).__name__}: {cause}")
