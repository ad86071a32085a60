"""Shortening a stream's age limit only once every durable has acknowledged what it deletes.

A stream that keeps events longer than its setting says (``RIDES`` and ``DRIVERS``:
``RIDEHAIL_STREAM_KEEP_S``; ``NOTIFICATIONS``: ``RIDEHAIL_NOTIFICATION_KEEP_S``; one from
before the limit keeps them all) is given the shorter age limit in place, which deletes
at once what it no longer keeps, so only once no durable still needs any of it: every
durable of the stream, ridehail's or not, has acknowledged every event the limit deletes.
No ridehail durable reads ``NOTIFICATIONS`` (the notifier writes it), so there only
another service's durables can hold the shortening back. ``shorten_ages`` waits
``wait_s`` for durables behind (the consumers may run meanwhile: they are what catches
up), and otherwise leaves the limit as it was and names them (``Behind``), with the
setting that would keep what they still need (``keeping_settings``). The events
themselves stay in the database's outbox. ``events.migrate_streams`` calls it for the
streams it does not rewrite.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy, StreamConfig
from nats.js.errors import NotFoundError

from events.fitcheck import SHORTEN, Finding, FitReport
from events.streams import stream_name

Say = Callable[[str], None]

# An event must be acknowledged this far inside a shorter age limit before it is applied:
# the limit takes effect a moment after the check, and events go on ageing meanwhile.
AGE_MARGIN_S = 10.0
POLL_S = 2.0
SAY_WAITING_EVERY_S = 15.0
CONSUMERS_PAGE = 256  # JetStream lists a stream's consumers this many at a time
# The setting that says how long each stream with an age limit keeps a message.
KEEP_SETTINGS = {"RIDES": "RIDEHAIL_STREAM_KEEP_S", "DRIVERS": "RIDEHAIL_STREAM_KEEP_S",
                 "NOTIFICATIONS": "RIDEHAIL_NOTIFICATION_KEEP_S"}


@dataclass
class Behind:
    """A durable that has not acknowledged an event a shorter age limit would delete."""

    consumer: str  # "RIDES > ride-projector-p3"
    first_needed: int  # the stream sequence of the first event it has not acknowledged
    age_s: float  # how long ago that event was stored
    cutoff: int  # the last sequence the shorter limit deletes

    @property
    def stream(self) -> str:
        return self.consumer.split(" > ", 1)[0]

    def __str__(self) -> str:
        return (f"{self.consumer} has not acknowledged sequence {self.first_needed} (stored "
                f"{self.age_s:.0f}s ago); the shorter age limit deletes up to {self.cutoff}")



def keeping(behind: list[Behind]) -> int:
    """A keep (RIDEHAIL_STREAM_KEEP_S, or RIDEHAIL_NOTIFICATION_KEEP_S) that keeps every
    event the durables ``behind`` still need, with an hour to catch up in (whole hours):
    shortening to it deletes only what they have all acknowledged, and the consumers can
    start and catch up on it."""
    hours = int(max((b.age_s for b in behind), default=0) // 3600) + 2
    return hours * 3600


def keeping_settings(behind: list[Behind]) -> dict[str, int]:
    """``keeping`` for each setting whose streams have durables ``behind`` (by name:
    RIDEHAIL_STREAM_KEEP_S for RIDES and DRIVERS, RIDEHAIL_NOTIFICATION_KEEP_S for
    NOTIFICATIONS), so the advice names the setting that holds the events back."""
    by_setting: dict[str, list[Behind]] = {}
    for b in behind:  # only these streams have an age limit to shorten
        by_setting.setdefault(KEEP_SETTINGS[b.stream], []).append(b)
    return {name: keeping(late) for name, late in by_setting.items()}


def said_settings(behind: list[Behind]) -> str:
    """The settings of ``keeping_settings`` as one would export them:
    ``RIDEHAIL_STREAM_KEEP_S=7200``, several joined by spaces."""
    return " ".join(f"{name}={value}" for name, value in keeping_settings(behind).items())


async def age_cutoff(js: JetStreamContext, name: str, keep_s: float) -> int:
    """The last stream sequence an age limit of ``keep_s`` would delete now, with
    ``AGE_MARGIN_S`` to spare (0: nothing)."""
    since = datetime.now(UTC) - timedelta(seconds=max(0.0, keep_s - AGE_MARGIN_S))
    last = (await js.stream_info(name)).state.last_seq
    sub = await js.pull_subscribe(
        "", stream=name,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME,
                              opt_start_time=since, ack_policy=AckPolicy.NONE,
                              inactive_threshold=60, mem_storage=True),
    )
    try:
        first_kept = await sub.fetch(1, timeout=2)
    except (NatsTimeoutError, TimeoutError):
        return last  # nothing that young: the limit deletes all of it
    finally:
        await sub.unsubscribe()
    return int(first_kept[0].metadata.sequence.stream) - 1


async def first_unacknowledged(js: JetStreamContext, stream: str, c: ConsumerInfo
                               ) -> int | None:
    """The stream sequence of the first event of its filter that a durable has not
    acknowledged (None: it has every one)."""
    if not c.num_pending and not c.num_ack_pending:
        return None
    floor = c.ack_floor.stream_seq if c.ack_floor else 0
    filters = c.config.filter_subjects or [c.config.filter_subject or ">"]
    found: list[int] = []
    for subject in filters:
        try:
            msg = await js.get_msg(stream, seq=floor + 1, subject=subject, next=True)
        except NotFoundError:
            continue
        if msg.seq is not None:
            found.append(msg.seq)
    return min(found, default=None)


async def durables_of(js: JetStreamContext, stream: str) -> list[ConsumerInfo]:
    """Every durable consumer of the stream that acknowledges what it reads, ridehail's
    or not."""
    every: list[ConsumerInfo] = []
    while page := await js.consumers_info(stream, offset=len(every) or None):
        every += page
        if len(page) < CONSUMERS_PAGE:
            break
    return [c for c in every
            if c.config.durable_name and c.config.ack_policy != AckPolicy.NONE]


async def durables_behind(js: JetStreamContext, stream: str, keep_s: float) -> list[Behind]:
    """The durables that still need an event an age limit of ``keep_s`` would delete."""
    cutoff = await age_cutoff(js, stream, keep_s)
    behind = []
    for c in await durables_of(js, stream):
        first = await first_unacknowledged(js, stream, c)
        if first is None or first > cutoff:
            continue
        stored = (await js.get_msg(stream, seq=first)).time
        age_s = (datetime.now(UTC) - stored).total_seconds() if stored else 0.0
        behind.append(Behind(f"{stream} > {c.name}", first, age_s, cutoff))
    return behind


async def shorten_age(js: JetStreamContext, declared: StreamConfig, *, wait_s: float,
                      say: Say) -> list[Behind]:
    """Give the stream its declared, shorter age limit once no durable still needs an
    event it deletes, waiting up to ``wait_s`` for those behind. Returns the durables
    still behind when the wait ran out (then the stream is left as it was)."""
    name, keep_s = stream_name(declared), float(declared.max_age or 0)
    deadline = time.monotonic() + wait_s
    said_at = -SAY_WAITING_EVERY_S
    while behind := await durables_behind(js, name, keep_s):
        now = time.monotonic()
        if now >= deadline:
            return behind
        if now - said_at >= SAY_WAITING_EVERY_S:
            said_at = now
            say(f"{name}: waiting for {len(behind)} durable(s) to acknowledge what an age "
                f"limit of {keep_s:g}s deletes: {behind[0]}")
        await asyncio.sleep(min(POLL_S, max(0.0, deadline - now)))
    before = (await js.stream_info(name)).state.messages
    await js.update_stream(declared)
    left = before - (await js.stream_info(name)).state.messages
    say(f"{name}: keeps an event {keep_s:g}s now; {max(left, 0)} older events left the "
        "stream (every durable had acknowledged them; the database's outbox keeps them)")
    return []


def is_shortening(finding: Finding) -> bool:
    return finding.field == "max_age" and finding.fix == SHORTEN


async def shorten_ages(js: JetStreamContext, report: FitReport, declared: list[StreamConfig],
                       *, wait_s: float, say: Say) -> tuple[dict[str, str], list[Behind]]:
    """The age limits the fit-check ``report`` left to shorten, shortened where no
    durable needs what that deletes: what was done per stream, and the durables behind."""
    done: dict[str, str] = {}
    behind: list[Behind] = []
    for config in declared:
        target = f"stream {stream_name(config)}"
        finding = next((f for f in report.findings
                        if f.target == target and is_shortening(f)), None)
        if finding is None:
            continue
        late = await shorten_age(js, config, wait_s=wait_s, say=say)
        behind += late
        done[stream_name(config)] = (
            f"{finding.found} → {finding.needed}" if not late
            else f"left at {finding.found}: {len(late)} durable(s) behind")
    return done, behind
