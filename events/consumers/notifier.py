"""The ``notifier`` consumer: tells riders and drivers what happened to their rides.

For each ride event, the rule in ``domain.notifications`` names the notices; each is
stored and published as ``notification.sent`` on ``notifications.<user_id>.sent`` in one
transaction with the processed-event record.
"""

from __future__ import annotations

from nats.aio.msg import Msg
from sqlalchemy import Table, bindparam, insert
from sqlmodel import Session, col, select

from domain.notifications import NOTIFYING_TYPES, notifications_for
from events.catalog import NotificationSent
from events.consumer import ConsumerSpec
from events.envelope import CloudEvent, derived_id, new_event
from events.outbox import Outbox
from events.processed import first_time
from events.projection import NotYetKnown
from store.db import table_of
from store.tables import Notification, Ride, utcnow

NAME = "notifier"
SOURCE = "ridehail/notifier"
_NOTIFICATIONS: Table = table_of(Notification)
# what a notice needs of the ride: whose it is
_RIDER_OF = select(Ride.rider_id).where(col(Ride.ride_id) == bindparam("ride_id"))


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
            rider_id = session.exec(_RIDER_OF, params={"ride_id": event.subject}).first()
            if rider_id is None:
                raise NotYetKnown(f"ride {event.subject} is not in the read model yet")
            notices = notifications_for(event, rider_id)
            if not notices or not first_time(session, NAME, event.id):
                return None, []
            now = utcnow()
            rows, events = [], []
            for n in notices:
                sent = NotificationSent(
                    notification_id=derived_id(event.id, n.user_id, n.kind),
                    user_id=n.user_id, ride_id=event.subject, kind=n.kind, message=n.message)
                rows.append({**sent.model_dump(), "created_at": now})
                events.append(new_event("notification.sent", sent, source=SOURCE,
                                        subject=n.user_id, event_id=sent.notification_id))
            session.connection().execute(insert(_NOTIFICATIONS), rows)
            return None, events

        await self.outbox.write(run)
