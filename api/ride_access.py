"""Which rides a caller may see, and the cursor of a page of them."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, Exists, bindparam, exists, or_, true
from sqlmodel import Session, col, select

from api.auth import ROLES, Principal
from api.problems import Problem, invalid
from api.schemas import ID_PATTERN
from store.tables import Offer, Ride

NOT_FOUND = "No such ride"


def _offered_to(driver_id: Any) -> Exists:
    return exists().where(col(Offer.ride_id) == Ride.ride_id, col(Offer.driver_id) == driver_id)


def _visible_to(role: str, sub: Any) -> ColumnElement[bool]:
    if role == "admin":
        return true()
    if role == "rider":
        return col(Ride.rider_id) == sub
    return or_(col(Ride.driver_id) == sub, _offered_to(sub))


def visible(who: Principal) -> ColumnElement[bool]:
    """The SQL condition for the rides ``who`` may see."""
    return _visible_to(who.role, who.sub)


_SUB: BindParameter[str] = bindparam("sub")
# One statement per role, built once: nearly every request about a ride runs it.
_GET_VISIBLE = {
    role: select(Ride).where(col(Ride.ride_id) == bindparam("ride_id"))
                      .where(_visible_to(role, _SUB))
    for role in ROLES
}


def get_visible(session: Session, ride_id: str, who: Principal) -> Ride:
    ride = session.exec(_GET_VISIBLE[who.role],
                        params={"ride_id": ride_id, "sub": who.sub}).first()
    if ride is None:
        raise Problem(404, NOT_FOUND)
    return ride


def encode_cursor(ride: Ride) -> str:
    raw = f"{ride.created_at.isoformat()}|{ride.ride_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_text, ride_id = raw.split("|", 1)
        created = datetime.fromisoformat(created_text)
        if created.tzinfo is None or not re.fullmatch(ID_PATTERN, ride_id):
            raise ValueError("not a cursor of ours")
        return created, ride_id
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise invalid("query.cursor", "invalid cursor",
                      "Invalid cursor; pass back the next_cursor of a previous page") from None
