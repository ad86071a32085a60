"""Operators: the dead-letter queue (events a consumer gave up on), and sending a dead
letter back to its consumers once the cause is fixed. The logic is ``events.dlq``'s,
shared with ``ridehail dlq``."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from nats.js.errors import NotFoundError

from api.auth import Admin
from api.problems import Problem, error_responses
from api.schemas import DeadLetterOut, DeadLetters, Redriven
from api.services import Deps
from events.dlq import DeadLetter, UnknownDeadLetter, list_dead_letters, redrive

router = APIRouter(prefix="/v1/admin", tags=["admin"])

# A stream sequence is an unsigned 64-bit integer on the server; JSON clients are only
# exact up to 2**53, which is far more dead letters than a stream will ever hold.
LetterId = Annotated[int, Path(ge=1, le=2**53, description="The dead letter's `id`")]


def _event_of(body: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(body)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _out(letter: DeadLetter) -> DeadLetterOut:
    return DeadLetterOut(
        id=letter.id, consumer=letter.consumer, original_subject=letter.original_subject,
        original_stream=letter.original_stream, original_seq=letter.original_seq,
        deliveries=letter.deliveries, error=letter.error, time=letter.time,
        event_id=letter.event_id, event_type=letter.event_type, event=_event_of(letter.body))


@router.get("/dlq", response_model=DeadLetters, responses=error_responses(401, 403, 422))
async def dead_letters(
    _: Admin,
    svc: Deps,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many")] = 100,
) -> DeadLetters:
    """Dead-lettered events, oldest first, with the consumer that gave up, how often it
    tried and the last error."""
    try:
        letters = await list_dead_letters(svc.js, limit=limit)
    except NotFoundError:  # no DLQ stream yet: nothing was ever dead-lettered
        letters = []
    return DeadLetters(dead_letters=[_out(letter) for letter in letters])


@router.post("/dlq/{letter_id}/redrive", status_code=202, response_model=Redriven,
             responses=error_responses(401, 403, 404, 422))
async def redrive_dead_letter(letter_id: LetterId, _: Admin, svc: Deps) -> Redriven:
    """Publish the dead letter to its original subject again and remove it from the DLQ;
    consumers that had already applied the event skip it by its id."""
    try:
        letter = await redrive(svc.js, letter_id)
    except (UnknownDeadLetter, NotFoundError):
        raise Problem(404, f"No dead letter {letter_id}") from None
    return Redriven(id=letter.id, original_subject=letter.original_subject,
                    event_id=letter.event_id)
