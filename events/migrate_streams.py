"""``ridehail streams migrate``: bring existing streams and consumers to the declared
configuration without losing a message.

What NATS updates in place is updated in place (``events.fitcheck``). A stream that
cannot be (storage or retention changed, sources set, or messages stored before the
partitioning transform, which no consumer reads) is rewritten: every message is read in
stream order and written to a backup file, the stream is recreated as declared, and the
messages are published again in the same order on their logical subjects, so the
transform partitions them. The declared durables that existed are recreated at the
same place in the rewritten stream (just after what they had acknowledged, and never
past a message they could not read before), so nothing is skipped; what they see twice
their handlers already ignore (events carry ids). Stop the ridehail components first.

A stream that keeps events longer than its setting says (``RIDES`` and ``DRIVERS``:
``RIDEHAIL_STREAM_KEEP_S``; ``NOTIFICATIONS``: ``RIDEHAIL_NOTIFICATION_KEEP_S``; one from
before the limit keeps them all) is given the shorter age limit in place, which deletes
at once what it no longer keeps, so only once no durable still needs any of it: every
durable of the stream, ridehail's or not, has acknowledged every event the limit deletes.
No ridehail durable reads ``NOTIFICATIONS`` (the notifier writes it), so there only
another service's durables can hold the shortening back. The migration waits ``wait_s``
for durables behind (the consumers may run meanwhile: they are what catches up), and
otherwise leaves the limit as it was and names them. The events themselves stay in the
database's outbox.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy, StreamConfig
from nats.js.errors import NotFoundError

from events.envelope import logical_subject
from events.fitcheck import SHORTEN, Finding, FitReport, NatsUnfit, fit_check, stranded_filter
from events.streams import NOTIFICATIONS_KEEP_S, STREAM_KEEP_S, stream_configs, stream_name
from events.topology import CONSUMER_GROUPS, ConsumerGroup

Say = Callable[[str], None]
READ_BATCH = 256
# An event must be acknowledged this far inside a shorter age limit before it is applied:
# the limit takes effect a moment after the check, and events go on ageing meanwhile.
AGE_MARGIN_S = 10.0
POLL_S = 2.0
SAY_WAITING_EVERY_S = 15.0
CONSUMERS_PAGE = 256  # JetStream lists a stream's consumers this many at a time
# The setting that says how long each stream with an age limit keeps a message.
KEEP_SETTINGS = {"RIDES": "RIDEHAIL_STREAM_KEEP_S", "DRIVERS": "RIDEHAIL_STREAM_KEEP_S",
                 "NOTIFICATIONS": "RIDEHAIL_NOTIFICATION_KEEP_S"}


class ComponentsRunning(RuntimeError):
    """Consumers are pulling from the durables: a migration would race them."""


@dataclass
class StoredMessage:
    seq: int
    subject: str
    headers: dict[str, str] | None
    data: bytes

    def as_json(self) -> str:
        return json.dumps({"seq": self.seq, "subject": self.subject, "headers": self.headers,
                           "data": base64.b64encode(self.data).decode()})


@dataclass
class MigrationResult:
    before: FitReport
    after: FitReport
    rewritten: dict[str, int] = field(default_factory=dict)  # stream -> messages kept
    backups: list[Path] = field(default_factory=list)
    recreated: list[str] = field(default_factory=list)  # durables, with their new start
    dropped: list[str] = field(default_factory=list)  # undeclared consumers of a rewrite
    shortened: dict[str, str] = field(default_factory=dict)  # stream -> what happened
    behind: list[Behind] = field(default_factory=list)  # durables a shortening waits for

    @property
    def ok(self) -> bool:
        return self.after.ok

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rewritten": self.rewritten,
                "backups": [str(Path(b).resolve()) for b in self.backups],
                "recreated": self.recreated, "dropped": self.dropped,
                "shortened": self.shortened, "behind": [str(b) for b in self.behind],
                "before": self.before.as_dict(), "after": self.after.as_dict()}


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


async def active_durables(js: JetStreamContext,
                          groups: Iterable[ConsumerGroup] = CONSUMER_GROUPS) -> list[str]:
    """The durables of ``groups`` that a consumer process is pulling from right now (a
    pull request waiting on the server: ``num_waiting``)."""
    active: list[str] = []
    for group in groups:
        for durable, _ in group.durables():
            try:
                info = await js.consumer_info(group.stream, durable)
            except NotFoundError:
                continue
            if (info.num_waiting or 0) > 0:
                active.append(f"{group.stream} > {durable}")
    return active


async def read_stream(js: JetStreamContext, name: str) -> list[StoredMessage]:
    """Every message of the stream, in stream order."""
    info = await js.stream_info(name)
    expected = info.state.messages
    sub = await js.pull_subscribe(
        "", stream=name,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE,
                              inactive_threshold=60, mem_storage=True),
    )
    out: list[StoredMessage] = []
    try:
        while len(out) < expected:
            try:
                msgs = await sub.fetch(READ_BATCH, timeout=2)
            except (NatsTimeoutError, TimeoutError):
                break
            for m in msgs:
                out.append(StoredMessage(m.metadata.sequence.stream, m.subject,
                                         dict(m.headers) if m.headers else None, m.data))
    finally:
        await sub.unsubscribe()
    if len(out) < expected:
        raise RuntimeError(f"read {len(out)} of the {expected} messages of {name}; "
                           "nothing was changed")
    return out


def write_backup(directory: Path, name: str, messages: list[StoredMessage]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    with open(path, "w") as f:
        for m in messages:
            f.write(m.as_json() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return path


def _republish_headers(headers: dict[str, str] | None) -> dict[str, str] | None:
    if not headers:
        return None
    kept = {k: v for k, v in headers.items() if not k.startswith("Nats-Expected")}
    return kept or None


async def rewrite_stream(js: JetStreamContext, declared: StreamConfig, backup_dir: Path,
                         result: MigrationResult, say: Say) -> None:
    name = stream_name(declared)
    info = await js.stream_info(name)
    positions: dict[tuple[ConsumerGroup, str, str], int] = {}
    for group in (g for g in CONSUMER_GROUPS if g.stream == name):
        for durable, subject in group.durables():
            try:
                c = await js.consumer_info(name, durable)
            except NotFoundError:
                continue
            positions[(group, durable, subject)] = c.ack_floor.stream_seq if c.ack_floor else 0
    declared_names = {d for (_, d, _) in positions}
    others = [c.name for c in await js.consumers_info(name) if c.name not in declared_names]

    say(f"{name}: reading {info.state.messages} messages")
    messages = await read_stream(js, name)
    backup = write_backup(backup_dir, name, messages)
    result.backups.append(backup)
    say(f"{name}: backed up to {backup}")
    stranded_pattern = stranded_filter(declared)
    stranded = {m.seq for m in messages
                if stranded_pattern and len(m.subject.split(".")) == 3}

    await js.delete_stream(name)
    await js.add_stream(declared)
    new_seq: dict[int, int] = {}
    for i, m in enumerate(messages, 1):
        ack = await js.publish(logical_subject(m.subject), m.data,
                               headers=_republish_headers(m.headers), stream=name)
        if not ack.duplicate:
            new_seq[m.seq] = ack.seq
        if i % 1000 == 0:
            say(f"{name}: {i} of {len(messages)} written back")
    result.rewritten[name] = len(new_seq)
    result.dropped += [f"{name} > {c}" for c in others]
    last = max(new_seq.values(), default=0)

    for (group, durable, subject), floor in positions.items():
        unread = [new for old, new in new_seq.items() if old > floor or old in stranded]
        start = min(unread, default=last + 1)
        config = group.config(durable, subject)
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = start
        await js.add_consumer(name, config)
        result.recreated.append(f"{name} > {durable} from sequence {start}")
    say(f"{name}: rewritten with {len(new_seq)} messages as declared")


async def recreate_durable(js: JetStreamContext, group: ConsumerGroup, durable: str,
                           subject: str, result: MigrationResult) -> None:
    """A durable whose configuration cannot change in place: recreated just after what
    it had acknowledged."""
    info = await js.consumer_info(group.stream, durable)
    start = (info.ack_floor.stream_seq if info.ack_floor else 0) + 1
    await js.delete_consumer(group.stream, durable)
    config = group.config(durable, subject)
    config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
    config.opt_start_seq = start
    await js.add_consumer(group.stream, config)
    result.recreated.append(f"{group.stream} > {durable} from sequence {start}")


# -- a shorter age limit ----------------------------------------------------------------

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


# -- the whole migration ---------------------------------------------------------------

def _planned(report: FitReport) -> tuple[set[str], list[tuple[ConsumerGroup, str, str]]]:
    """The streams to rewrite (anything differs but an age limit to shorten) and the
    durables to recreate (on the streams that are not rewritten)."""
    rewrite = {f.target.removeprefix("stream ") for f in report.findings
               if f.target.startswith("stream ") and not is_shortening(f)}
    recreate = [(group, durable, subject) for group in CONSUMER_GROUPS
                if group.stream not in rewrite
                for durable, subject in group.durables()
                if any(f.target == f"consumer {group.stream} > {durable}"
                       for f in report.findings)]
    return rewrite, recreate


async def migrate(nc: NATS, js: JetStreamContext, *, replicas: int, backup_dir: Path,
                  say: Say, keep_s: float = STREAM_KEEP_S,
                  notification_keep_s: float = NOTIFICATIONS_KEEP_S, force: bool = False,
                  wait_s: float = 0.0) -> MigrationResult:
    """Bring the streams and durables to the declared configuration (``keep_s``: how long
    RIDES and DRIVERS keep an event; ``notification_keep_s``: how long NOTIFICATIONS keeps
    a notification). A rewrite or a recreated durable races consumers that are pulling,
    so it is refused then unless ``force``; a shorter age limit is not, and waits up to
    ``wait_s`` for durables behind."""
    before = await fit_check(nc, js, replicas=replicas, keep_s=keep_s,
                             notification_keep_s=notification_keep_s, repair=True)
    if not before.server_fits:
        raise NatsUnfit(before)
    rewrite, recreate = _planned(before)
    if (rewrite or recreate) and not force and (active := await active_durables(js)):
        groups = sorted({d.split(" > ")[1].rsplit("-p", 1)[0] for d in active})
        raise ComponentsRunning(
            f"ridehail consumers are pulling from {len(active)} durables "
            f"({', '.join(groups)}); stop `ridehail consumers` (or `ridehail dev`) first, "
            "or pass --force")
    result = MigrationResult(before=before, after=before)
    for line in before.done:
        say(line)
    declared = stream_configs(replicas, keep_s, notification_keep_s=notification_keep_s)
    for config in declared:
        if config.name in rewrite:
            await rewrite_stream(js, config, backup_dir, result, say)
    for group, durable, subject in recreate:
        await recreate_durable(js, group, durable, subject, result)
        say(f"recreated {group.stream} > {durable}")
    result.shortened, result.behind = await shorten_ages(
        js, before, [c for c in declared if c.name not in rewrite], wait_s=wait_s, say=say)
    result.after = await fit_check(nc, js, replicas=replicas, keep_s=keep_s,
                                   notification_keep_s=notification_keep_s, repair=True)
    return result
