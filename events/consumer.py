"""The durable-consumer runner every ridehail consumer is built on.

A consumer is a named group (``workflow-trigger``, ``ride-projector``, ...) on one stream.
Ordered consumers (those that must apply a ride's events in order) keep one durable per
stream partition with one message in flight; several processes can pull from the same
durables and order still holds. Unordered consumers use one durable with a larger window.

A message is acknowledged only after its handler's effect is done. An infrastructure
failure (``events.failures``: Temporal, the database or NATS unavailable) is retried in
place, holding the message, for as long as it lasts, and never dead-letters it; the
consumer is reported blocked meanwhile (``events.health``). A poison message (not a valid
event, or refused with ``PermanentError``) is copied at once to
``dlq.<consumer>.<original subject>`` with headers saying why, then terminated; any other
handler failure is redelivered with a growing delay and dead-lettered after
``max_deliver`` deliveries. Nothing a message does, nor an ack or a DLQ publish failing,
ends the pull loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from events import tracecontext
from events.envelope import CloudEvent, InvalidEvent, logical_subject, parse_event
from events.failures import PermanentError, describe, is_transient
from events.health import ConsumerHealth
from events.topology import ACK_WAIT_S, ConsumerGroup
from infra.logs import ride_context, ride_extra

log = logging.getLogger(__name__)

# How long one pull waits for messages; also how soon a loop notices it should stop.
FETCH_WAIT_S = 2.0

Handler = Callable[[CloudEvent, Msg], Awaitable[None]]


@dataclass(frozen=True)
class ConsumerSpec:
    name: str
    stream: str
    prefix: str  # "rides", "drivers", "notifications"
    handler: Handler
    ordered: bool = True
    types: frozenset[str] | None = None  # event types to handle; others are acked
    max_deliver: int = 6
    backoff_s: tuple[float, ...] = field(default=(0.5, 1, 2, 5, 10))
    batch: int = 32
    # a message carrying this header needs nothing from this consumer: it is acknowledged
    # unread (the projectors: events applied where they were written)
    done_if_header: str | None = None

    @property
    def group(self) -> ConsumerGroup:
        return ConsumerGroup(self.name, self.stream, self.prefix, self.ordered, self.types)


def durable_names(spec: ConsumerSpec) -> list[tuple[str, str]]:
    """(durable name, filter subject) pairs that make up the consumer group."""
    return spec.group.durables()


async def ensure_consumers(js: JetStreamContext, spec: ConsumerSpec,
                           start_after: int | None = None) -> None:
    """Create the group's durables that do not exist yet (from the start of the stream,
    or after sequence ``start_after``); existing ones keep their position."""
    for durable, subject in durable_names(spec):
        try:
            await js.consumer_info(spec.stream, durable)
            continue
        except NotFoundError:
            pass
        config = spec.group.config(durable, subject)
        if start_after is not None:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = start_after + 1
        await js.add_consumer(spec.stream, config)


async def _unsubscribe(sub: JetStreamContext.PullSubscription | None) -> None:
    if sub is not None:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def _unless_stopped(fetching: Awaitable[list[Msg]], stop: asyncio.Event
                          ) -> list[Msg] | None:
    """The fetch's messages, or None as soon as ``stop`` is set (the pull is cancelled;
    a message it had already received is redelivered after the ack wait)."""
    fetch = asyncio.ensure_future(fetching)
    stopped = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({fetch, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if fetch in done:
        stopped.cancel()
        return fetch.result()
    fetch.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await fetch
    return None


async def _keep_in_progress(msg: Msg) -> None:
    """Tell JetStream the message is still being worked on, so a slow handler (Temporal
    busy, database locked) is not raced by a redelivery to another process."""
    while True:
        await asyncio.sleep(ACK_WAIT_S / 3)
        with contextlib.suppress(Exception):
            await msg.in_progress()


# Transient failures are retried in place, holding the message (so a ride's later events
# wait behind it), with a delay doubling from the first to the cap.
TRANSIENT_FIRST_DELAY_S = 0.5
TRANSIENT_MAX_DELAY_S = 30.0
# While blocked, the log says so at most this often.
BLOCKED_LOG_EVERY_S = 60.0


def transient_delay(attempt: int) -> float:
    # the doublings stop well past the cap: 2 ** 1024 is beyond a float (hours of tries)
    doublings = min(max(attempt - 1, 0), 32)
    return min(TRANSIENT_MAX_DELAY_S, TRANSIENT_FIRST_DELAY_S * 2.0 ** doublings)


class ConsumerRunner:
    def __init__(self, js: JetStreamContext, spec: ConsumerSpec,
                 health: ConsumerHealth | None = None) -> None:
        self.js = js
        self.spec = spec
        self.health = health or ConsumerHealth()
        self._stop = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        # NATS failing or not answering while the durables are created is waited out,
        # blocked, like a handler's transient failure; JetStream refusing them ends it
        if not await self._until_it_clears(self.spec.name, "creating its durables",
                                           lambda: ensure_consumers(self.js, self.spec)):
            return
        loops = [
            asyncio.create_task(self._pull(durable, stop), name=durable)
            for durable, _subject in durable_names(self.spec)
        ]
        try:
            await asyncio.gather(*loops)
        finally:
            for t in loops:
                t.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    async def _until_it_clears(self, blocked_as: str, doing: str,
                               attempt: Callable[[], Awaitable[None]]) -> bool:
        """Run ``attempt``, retrying a transient failure in place for as long as it lasts,
        with ``blocked_as`` blocked meanwhile (told in the log once a minute). False if
        asked to stop meanwhile; any other failure is raised."""
        tries = 0
        last_log = 0.0
        while True:
            try:
                await attempt()
            except Exception as e:
                if not is_transient(e):
                    raise
                tries += 1
                blocked = self.health.block(blocked_as, describe(e))
                if (now := time.monotonic()) - last_log >= BLOCKED_LOG_EVERY_S:
                    last_log = now
                    log.warning("%s: blocked on %s since %s (%d tries): %s; retrying until "
                                "it clears", blocked_as, doing,
                                blocked.since.isoformat(timespec="seconds"), blocked.attempts,
                                blocked.reason)
                if await _sleep_unless(self._stop, transient_delay(tries)):
                    return False
                continue
            cleared = self.health.clear(blocked_as)
            if cleared is not None:
                log.warning("%s: unblocked after %.0fs and %d tries", blocked_as,
                            cleared.seconds, cleared.attempts)
            return True

    async def _pull(self, durable: str, stop: asyncio.Event) -> None:
        sub = None
        try:
            while not stop.is_set():
                try:
                    if sub is None:
                        sub = await self.js.pull_subscribe_bind(durable, stream=self.spec.stream)
                    # one at a time when ordered: JetStream holds back the next message
                    # until this one is acknowledged anyway (max_ack_pending=1)
                    batch = 1 if self.spec.ordered else self.spec.batch
                    msgs = await _unless_stopped(sub.fetch(batch, timeout=FETCH_WAIT_S), stop)
                except (NatsTimeoutError, TimeoutError):
                    continue
                except Exception as e:  # noqa: BLE001 — NATS reconnecting; try again shortly
                    log.warning("%s: fetch failed (%s); retrying", durable, e)
                    await _unsubscribe(sub)
                    sub = None
                    await _sleep_unless(stop, 1)
                    continue
                if msgs is None:
                    break  # stopping: an unfinished pull is abandoned, nothing was handled
                if self.spec.ordered:
                    for msg in msgs:
                        await self._handle_safely(durable, msg)
                else:
                    await asyncio.gather(*(self._handle_safely(durable, m) for m in msgs))
        finally:
            await _unsubscribe(sub)

    async def _handle_safely(self, durable: str, msg: Msg) -> None:
        """Handle one message; nothing that goes wrong (an ack, a nak or a DLQ publish
        failing while NATS is away included) ends the pull loop: an unacknowledged
        message is redelivered after the ack wait, and the handlers are idempotent."""
        try:
            await self._handle(durable, msg)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 — see above
            log.warning("%s: message %s left for redelivery: %s", durable,
                        _seq(msg), describe(e))

    async def _handle(self, durable: str, msg: Msg) -> None:
        spec = self.spec
        meta = msg.metadata
        if spec.done_if_header and msg.headers and msg.headers.get(spec.done_if_header):
            await msg.ack()
            return
        try:
            event = parse_event(msg.data)
        except InvalidEvent as e:
            await self._dead_letter(msg, str(e))
            return
        if spec.types is not None and event.type not in spec.types:
            await msg.ack()
            return
        keepalive = asyncio.create_task(_keep_in_progress(msg))
        try:
            handled = await self._run_traced(durable, event, msg)
        except (InvalidEvent, PermanentError) as e:
            await self._dead_letter(msg, describe(e))
            return
        except Exception as e:  # noqa: BLE001 — a handler's own failure: retried, then DLQ
            self.health.count(spec.name, "failed")
            n = meta.num_delivered
            if n >= spec.max_deliver:
                log.error("%s: %s failed %d times, dead-lettering: %s", spec.name, event.id, n, e,
                          extra=ride_extra(event.type, event.subject))
                await self._dead_letter(msg, describe(e))
                return
            delay = spec.backoff_s[min(n - 1, len(spec.backoff_s) - 1)]
            log.warning("%s: %s failed (delivery %d), retry in %ss: %s", spec.name, event.id,
                        n, delay, e, extra=ride_extra(event.type, event.subject))
            await msg.nak(delay=delay)
            return
        finally:
            keepalive.cancel()
        if handled:
            await msg.ack()
            self.health.count(spec.name, "handled")
        # else: stopping while blocked; the message is redelivered to whoever runs next

    async def _run_traced(self, durable: str, event: CloudEvent, msg: Msg) -> bool:
        """The handler, its log lines tagged with the ride, in a ``process`` span that
        continues the event's trace when tracing is on."""
        with ride_context(ride_extra(event.type, event.subject).get("ride_id")):
            if not tracecontext.tracing_on():
                return await self._run_handler(durable, event, msg)
            with tracecontext.process_span(event, logical_subject(msg.subject),
                                           self.spec.name, msg.headers):
                return await self._run_handler(durable, event, msg)

    async def _run_handler(self, durable: str, event: CloudEvent, msg: Msg) -> bool:
        """Run the handler, retrying transient failures in place for as long as they last
        (the message held, so nothing behind it overtakes it). False if asked to stop
        meanwhile."""
        return await self._until_it_clears(durable, f"{event.type} {event.id}",
                                           lambda: self.spec.handler(event, msg))

    async def _dead_letter(self, msg: Msg, error: str) -> None:
        meta = msg.metadata
        original = logical_subject(msg.subject)
        headers = {
            "Ridehail-Consumer": self.spec.name,
            "Ridehail-Stream": meta.stream,
            "Ridehail-Stream-Seq": str(meta.sequence.stream),
            "Ridehail-Deliveries": str(meta.num_delivered),
            "Ridehail-Error": error[:1000].replace("\n", " "),
            "Ridehail-Original-Subject": original,
        }
        await self.js.publish(
            f"dlq.{self.spec.name}.{original}",
            msg.data,
            headers={**headers, "Nats-Msg-Id": f"dlq:{self.spec.name}:{meta.sequence.stream}"},
        )
        await msg.term()
        self.health.count(self.spec.name, "dead_lettered")


def _seq(msg: Msg) -> str:
    try:
        return str(msg.metadata.sequence.stream)
    except Exception:  # noqa: BLE001 — not a JetStream message
        return "?"


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, waking early if ``stop`` is set; True if it was."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True
