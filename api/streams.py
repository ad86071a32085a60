"""Live streams as Server-Sent Events (``Accept: text/event-stream``).

- A ride's events: its history from the event log (events.log), then events as they are
  published, ending after the event that ends the ride (``id`` = the event's position in
  the log, so a reconnecting client's ``Last-Event-ID`` resumes right after the last
  event it saw). All of an API process's ride streams share one JetStream consumer
  (api.fanout).
- A driver's offers: the pending ones, then each new one as the saga makes it. All of an
  API process's offer streams share one JetStream consumer (``OfferHub``) that is open
  only while someone listens; each stream also re-reads the offers table now and then,
  so an offer missed while NATS was away still reaches the driver.

Every stream releases what it holds on NATS when its client goes away, and ends when the
API shuts down (``Streams.close``) instead of holding the shutdown up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from api.fanout import FeedIdle, LiveRide, RideFanout, SharedFeed, StreamSlots
from api.metrics import Metrics
from api.problems import title_of
from api.schemas import OfferOut
from events.envelope import CloudEvent
from events.log import TERMINAL_TYPES, Logged, ended_in_log, position_of, read_ride
from store.db import Database

log = logging.getLogger(__name__)
T = TypeVar("T")

SSE = "text/event-stream"
# Comment lines this often keep proxies from timing an idle stream out.
PING_S = 15.0
# A client that cannot take an event within this long is dropped.
SEND_TIMEOUT_S = 30.0
# How often an idle ride stream reads the event log for what the live tail did not bring
# (and whether the ride has ended), and an offer stream re-reads the table.
IDLE_CHECK_S = 10.0
OFFER_QUEUE_SIZE = 100
OFFERED_FILTER = "rides.*.*.driver_offered"  # stored subjects are partitioned


def wants_event_stream(accept: str | None) -> bool:
    """The client asks for ``text/event-stream`` (and does not refuse it with q=0)."""
    for media_range in (accept or "").lower().split(","):
        kind, *params = (part.strip() for part in media_range.split(";"))
        if kind != SSE:
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


class Streams:
    """The live streams of one API process: what they share, and their shutdown."""

    def __init__(self, db: Database, nc: NATS, js: JetStreamContext, metrics: Metrics,
                 per_subject: int = 8) -> None:
        self.db = db
        self.nc = nc
        self.js = js
        self.metrics = metrics
        self.closing = asyncio.Event()
        self.offers = OfferHub(nc, js)
        self.rides = RideFanout(nc, js)
        self.slots = StreamSlots(per_subject)

    async def aclose(self) -> None:
        """Release what the streams share on NATS (the API is stopping)."""
        await self.offers.aclose()
        await self.rides.aclose()

    def close(self) -> None:
        """End every open stream (the server is shutting down)."""
        self.closing.set()

    async def until_closing(self, aw: Awaitable[T]) -> T:
        """Await ``aw``; if the API shuts down first, raise ``StreamClosing``."""
        task = asyncio.ensure_future(aw)
        closing = asyncio.ensure_future(self.closing.wait())
        try:
            done, _ = await asyncio.wait({task, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, closing):
                if not t.done():
                    t.cancel()
        if task in done:
            return task.result()
        with contextlib.suppress(BaseException):
            await task  # let its cancellation finish before we move on
        raise StreamClosing()

    def response(self, name: str, events: AsyncGenerator[ServerSentEvent, None],
                 subject: str | None = None) -> EventSourceResponse:
        """The SSE response for ``events``, counted in the open-streams gauge and, for
        ``subject``, against its cap (a 429 problem when it has too many open)."""
        if subject is not None:
            self.slots.take(subject)

        async def counted() -> AsyncIterator[ServerSentEvent]:
            gauge = self.metrics.streams_open.labels(name)
            gauge.inc()
            try:
                # aclosing: however this ends (disconnect included), the inner generator
                # is closed, so what it holds on NATS is released now, not at GC.
                async with contextlib.aclosing(events) as inner:
                    async for event in inner:
                        yield event
            except StreamClosing:
                return
            except Exception as e:  # noqa: BLE001 — the status line is sent: say so in-band
                log.warning("%s stream failed: %r", name, e)
                yield ServerSentEvent(event="problem", data=json.dumps({
                    "type": "about:blank", "title": title_of(503), "status": 503,
                    "detail": "The stream was interrupted; reconnect to resume"}))
            finally:
                gauge.dec()

        if subject is None:
            return EventSourceResponse(counted(), ping=PING_S, send_timeout=SEND_TIMEOUT_S)
        return _SlotResponse(counted(), ping=PING_S, send_timeout=SEND_TIMEOUT_S,
                             release=lambda: self.slots.give_back(subject))


class _SlotResponse(EventSourceResponse):
    """Gives the stream's slot back however the response ends, even one whose body never
    started (the client left before)."""

    def __init__(self, *args: Any, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


class StreamClosing(Exception):
    """The API is shutting down."""


# --- a ride's events ----------------------------------------------------------------------


def ride_event(position: int, event: CloudEvent) -> ServerSentEvent:
    return ServerSentEvent(id=str(position), event=event.type, data=event.model_dump_json())


async def ride_events(streams: Streams, ride_id: str, after: int
                      ) -> AsyncIterator[ServerSentEvent]:
    """History after position ``after``, then live events, until the ride's last event.

    Live events come from the process's shared subscription (api.fanout), listened to
    before the history is read from the database, so an event committed in between is
    in one or both (and sent once: by position). What the fan-out missed is read back
    from the database.
    """
    follower = _RideFollower(streams, ride_id, after)
    async with (streams.rides.listen(ride_id) as live,
                # however the stream ends, the follower stops where it is
                contextlib.aclosing(follower.events(live)) as events):
        async for position, event in events:
            yield ride_event(position, event)
            if event.type in TERMINAL_TYPES:
                return


class _RideFollower:
    """One client's stream of a ride's events: what it has been given (``sent``, the
    positions in the event log, all above ``after``, where the client resumed) and how
    it finds what comes next.

    Positions are given out as events are written, and on PostgreSQL two transactions
    may commit in the other order; so an event is judged by whether it was sent, not by
    whether its position is above the last one sent: one committed a moment late is
    still sent, once."""

    def __init__(self, streams: Streams, ride_id: str, after: int) -> None:
        self.streams = streams
        self.db = streams.db
        self.ride_id = ride_id
        self.after = after
        self.last = after  # the highest position sent
        self.sent: set[int] = set()

    async def events(self, live: LiveRide) -> AsyncGenerator[Logged, None]:
        """The ride's events after ``after``, each once: the history in order, then live
        ones (and those the fan-out missed, read back from the database). It ends by
        itself only when the ride's last event is at or before ``after`` (a client
        resuming after the end); otherwise its reader stops after the ride's last
        event."""
        for item in self.fresh(await read_ride(self.db, self.ride_id, self.after)):
            yield item
        if await self.ended_in_log():  # a client resuming after the last event
            return
        while True:
            if live.missed:
                live.missed = False
                for item in self.fresh(await read_ride(self.db, self.ride_id, self.after)):
                    yield item
            try:
                position, event = await self.streams.until_closing(live.next(IDLE_CHECK_S))
            except FeedIdle:
                # quiet: anything the live tail did not bring (NATS reconnecting)?
                for item in self.fresh(await read_ride(self.db, self.ride_id, self.last)):
                    yield item
                if await self.ended_in_log():
                    return
                continue
            if position is None:  # published without its position: look it up
                position = await self.position_in_log(event.id)
                if position is None:
                    continue  # not in the event log, so not in the ride's history
            for item in self.fresh([(position, event)]):
                yield item

    def fresh(self, items: list[Logged]) -> list[Logged]:
        """Those of ``items`` not sent yet and after where the client resumed, now
        counted as sent."""
        out = []
        for position, event in items:
            if position > self.after and position not in self.sent:
                self.sent.add(position)
                self.last = max(self.last, position)
                out.append((position, event))
        return out

    async def ended_in_log(self) -> bool:
        """The event that ended the ride is in the event log."""
        return await self.db.read(lambda s: ended_in_log(s, self.ride_id))

    async def position_in_log(self, event_id: str) -> int | None:
        """Where a live event came without its position (published by an older version,
        or a dead letter redriven): its position in the log, if it is there."""
        return await self.db.read(lambda s: position_of(s, event_id))


# --- a driver's offers -----------------------------------------------------------------


class OfferHub(SharedFeed[asyncio.Queue[CloudEvent]]):
    """Fans ``ride.driver_offered`` events out to the offer streams open in this process:
    one JetStream consumer for all of them, created for the first listener and deleted
    with the last."""

    def __init__(self, nc: NATS, js: JetStreamContext) -> None:
        super().__init__(nc, js, OFFERED_FILTER)

    def key_of(self, event: CloudEvent) -> str | None:
        driver_id = event.data.get("driver_id")
        return None if driver_id is None else str(driver_id)

    def hand_over(self, listener: asyncio.Queue[CloudEvent], position: int | None,
                  event: CloudEvent) -> None:
        try:
            listener.put_nowait(event)
        except asyncio.QueueFull:
            # The stream is not keeping up; it re-reads the table on its next idle
            # check, so the offer is late rather than lost.
            log.warning("offer stream of %s is full; dropping a live offer",
                        event.data.get("driver_id"))

    def listen(self, driver_id: str
               ) -> contextlib.AbstractAsyncContextManager[asyncio.Queue[CloudEvent]]:
        """A queue of the offers made to ``driver_id`` from now on."""
        return self.listening(driver_id, asyncio.Queue(OFFER_QUEUE_SIZE))


def offer_event(offer: OfferOut) -> ServerSentEvent:
    return ServerSentEvent(id=offer.offer_id, event="offer", data=offer.model_dump_json())


async def driver_offers(streams: Streams, driver_id: str,
                        pending_offers: Callable[[], Awaitable[list[OfferOut]]],
                        offer: Callable[[str], Awaitable[OfferOut | None]],
                        ) -> AsyncIterator[ServerSentEvent]:
    """The driver's pending offers, then new ones as they are made. Endless."""
    sent: set[str] = set()

    def new(offers: Iterable[OfferOut]) -> list[OfferOut]:
        fresh = [o for o in offers if o.offer_id not in sent]
        sent.update(o.offer_id for o in fresh)
        return fresh

    # Listen first, read the table second: an offer made in between is in both, and is
    # sent once; listening second could miss it.
    async with streams.offers.listen(driver_id) as queue:
        for o in new(await pending_offers()):
            yield offer_event(o)
        while True:
            try:
                event = await streams.until_closing(
                    asyncio.wait_for(queue.get(), IDLE_CHECK_S))
            except TimeoutError:
                for o in new(await pending_offers()):
                    yield offer_event(o)
                continue
            offer_id = str(event.data.get("offer_id", ""))
            if offer_id in sent:
                continue
            current = await offer(offer_id)
            if current is not None:
                for o in new([current]):
                    yield offer_event(o)
