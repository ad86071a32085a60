"""The ``notifier`` consumer: tells riders and drivers what happened to their rides.

For each ride event, the rule in ``ridehail.domain.notifications`` names the notices; each is
stored and published as ``notification.sent`` on ``notifications.<user_id>.sent`` in one
transaction with the processed-event record.
"""

from __future__ import annotations

from nats.aio.msg import Msg
from sqlmodel import Session

from events.catalog import NotificationSent
from events.consumer import ConsumerSpec
from events.envelope import CloudEvent, derived_id, new_event
from events.outbox import Outbox
from events.processed import first_time
from events.projection import NotYetKnown
from ridehail.domain.notifications import NOTIFYING_TYPES, notifications_for
from ridehail.store.tables import Notification, Ride

NAME = "notifier"
SOURCE = "ridehail/notifier"


class Notifier:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def spec(self) -> ConsumerSpec:
        return ConsumerSpec(
            name=NAME, stream="RIDES", prefix="rides", handler=self.handle, ordered=False,
            types=NOTIFYING_TYPES,
        )

    async def handle(self, event: CloudEvent, msg: Msg) -> None:
        if not notifications_for(event, rider_id=""):
            return  # most ride events tell nobody anything: no transaction for them

        def run(session: Session) -> tuple[None, list[CloudEvent]]:
            ride = session.get(Ride, event.subject)
            if ride is None:
                raise NotYetKnown(f"ride {event.subject} is not in the read model yet")
            notices = notifications_for(event, ride.rider_id)
            if not notices or not first_time(session, NAME, event.id):
                return None, []
            events = []
            for n in notices:
                nid = derived_id(event.id, n.user_id, n.kind)
                session.add(
                    Notification(
                        notification_id=nid,
                        user_id=n.user_id,
                        ride_id=event.subject,
                        kind=n.kind,
                        message=n.message,
                    )
                )
                events.append(
                    new_event(
                        "notification.sent",
                        NotificationSent(
                            notification_id=nid,
                            user_id=n.user_id,
                            ride_id=event.subject,
                            kind=n.kind,
                            message=n.message,
                        ),
                        source=SOURCE,
                        subject=n.user_id,
                        event_id=nid,
                    )
                )
            return None, events

        await self.outbox.write(run)
