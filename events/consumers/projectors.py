"""The ``ride-projector`` and ``driver-projector`` consumers: events that reached the
streams without being applied where they were written (relayed, redriven, published by
anyone else) are applied to the read models by ``events.projection``."""

from __future__ import annotations

from nats.aio.msg import Msg

from events.consumer import ConsumerSpec
from events.envelope import APPLIED_HEADER, CloudEvent
from events.processed import processed
from events.projection import (
    DRIVER_PROJECTOR,
    RIDE_PROJECTOR,
    project_driver_event,
    project_ride_event,
)
from store.db import Database


class Projectors:
    def __init__(self, db: Database) -> None:
        self.db = db

    def specs(self) -> list[ConsumerSpec]:
        return [
            ConsumerSpec(name=RIDE_PROJECTOR, stream="RIDES", prefix="rides",
                         handler=self.project_ride, done_if_header=APPLIED_HEADER),
            ConsumerSpec(name=DRIVER_PROJECTOR, stream="DRIVERS", prefix="drivers",
                         handler=self.project_driver, done_if_header=APPLIED_HEADER),
        ]

    # Events whose publisher applied them where they were written carry APPLIED_HEADER
    # and never reach these handlers (ConsumerSpec.done_if_header). The others (published
    # by the relay, redriven, or by anyone else) were most likely applied too: look first.

    async def project_ride(self, event: CloudEvent, msg: Msg) -> None:
        if not await self.db.read(lambda s: processed(s, RIDE_PROJECTOR, event.id)):
            await self.db.write(lambda session: project_ride_event(session, event))

    async def project_driver(self, event: CloudEvent, msg: Msg) -> None:
        if not await self.db.read(lambda s: processed(s, DRIVER_PROJECTOR, event.id)):
            await self.db.write(lambda session: project_driver_event(session, event))
