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

A stream that only keeps events longer than its setting says is not rewritten: it is
given the shorter age limit in place once every durable has acknowledged what that
deletes (``events.stream_age``), waiting ``wait_s`` for durables behind.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
from nats.js.errors import NotFoundError

from events.envelope import logical_subject
from events.fitcheck import FitReport, NatsUnfit, fit_check, stranded_filter
from events.stream_age import Behind, Say, is_shortening, shorten_ages
from events.streams import NOTIFICATIONS_KEEP_S, STREAM_KEEP_S, stream_configs, stream_name
from events.topology import CONSUMER_GROUPS, ConsumerGroup

READ_BATCH = 256


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
