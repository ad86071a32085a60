"""Events the worker publishes, with ids derived from the workflow id and the saga step:
a retried activity produces the same id, so the outbox and JetStream keep one copy."""

from __future__ import annotations

from temporalio import activity

from events.catalog import Payload
from events.envelope import CloudEvent, derived_id, new_event

SOURCE = "ridehail/worker"


def step_key(step: str) -> str:
    """``ride-<id>:<step>``: the idempotency key of one effect of the running workflow."""
    return f"{activity.info().workflow_id}:{step}"


def fact(event_type: str, ride_id: str, step: str, data: Payload) -> CloudEvent:
    return new_event(
        event_type, data, source=SOURCE, subject=ride_id, event_id=derived_id(step_key(step))
    )
