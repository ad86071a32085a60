"""The dead-letter queue: events a consumer gave up on, kept on the ``DLQ`` stream as
``dlq.<consumer>.<original subject>`` with headers saying who failed, where and why.

``redrive`` publishes a dead letter back to its original subject, under a new message
id (the original id is still inside JetStream's duplicate window, which would drop it),
and removes it from the DLQ. Every consumer then sees the event again; those that had
already applied it skip it by its event id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from events.envelope import InvalidEvent, parse_event

STREAM = "DLQ"


@dataclass(frozen=True)
class DeadLetter:
    id: int  # the DLQ stream sequence
    consumer: str
    original_subject: str
    original_stream: str
    original_seq: int
    deliveries: int
    error: str
    time: datetime | None
    event_id: str | None
    event_type: str | None
    body: bytes


class UnknownDeadLetter(LookupError):
    pass


def _letter(seq: int, subject: str, headers: dict[str, str] | None, body: bytes,
            time: datetime | None) -> DeadLetter:
    h = headers or {}
    event_id: str | None
    event_type: str | None
    try:
        event = parse_event(body)
        event_id, event_type = event.id, event.type
    except InvalidEvent:
        event_id = event_type = None
    consumer = h.get("Ridehail-Consumer") or subject.split(".")[1]
    return DeadLetter(
        id=seq,
        consumer=consumer,
        original_subject=h.get("Ridehail-Original-Subject")
        or subject.removeprefix(f"dlq.{consumer}."),
        original_stream=h.get("Ridehail-Stream", ""),
        original_seq=int(h.get("Ridehail-Stream-Seq", "0") or 0),
        deliveries=int(h.get("Ridehail-Deliveries", "0") or 0),
        error=h.get("Ridehail-Error", ""),
        time=time,
        event_id=event_id,
        event_type=event_type,
        body=body,
    )


async def get_dead_letter(js: JetStreamContext, letter_id: int) -> DeadLetter:
    try:
        raw = await js.get_msg(STREAM, letter_id)
    except NotFoundError:
        raise UnknownDeadLetter(f"no dead letter {letter_id}") from None
    return _letter(raw.seq or letter_id, raw.subject or "", raw.headers, raw.data or b"",
                   getattr(raw, "time", None))


async def list_dead_letters(js: JetStreamContext, limit: int = 1000) -> list[DeadLetter]:
    """Dead letters, oldest first."""
    state = (await js.stream_info(STREAM)).state
    out: list[DeadLetter] = []
    if not state.messages:
        return out
    seq = state.first_seq
    while seq <= state.last_seq and len(out) < limit:
        try:
            out.append(await get_dead_letter(js, seq))
        except UnknownDeadLetter:
            pass  # deleted after a redrive
        seq += 1
    return out


async def dlq_depth(js: JetStreamContext) -> int:
    return int((await js.stream_info(STREAM)).state.messages)


async def redrive(js: JetStreamContext, letter_id: int) -> DeadLetter:
    """Publish the dead letter to its original subject again and drop it from the DLQ."""
    letter = await get_dead_letter(js, letter_id)
    await js.publish(
        letter.original_subject,
        letter.body,
        headers={"Nats-Msg-Id": f"{letter.event_id or 'raw'}:redrive:{letter.id}"},
    )
    await js.delete_msg(STREAM, letter.id)
    return letter


async def discard(js: JetStreamContext, letter_id: int) -> DeadLetter:
    """Drop a dead letter an operator has read and decided needs nothing more."""
    letter = await get_dead_letter(js, letter_id)
    await js.delete_msg(STREAM, letter.id)
    return letter
