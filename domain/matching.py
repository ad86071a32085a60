"""Matching rules: which free driver is offered a ride first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from domain.geo import Point, haversine_m


class Located(Protocol):
    """A driver as ranking sees one: an id and a last known position."""

    @property
    def driver_id(self) -> str: ...

    @property
    def lat(self) -> float | None: ...

    @property
    def lng(self) -> float | None: ...


D = TypeVar("D", bound=Located)


def rank_candidates(pickup: Point, drivers: Sequence[D]) -> list[D]:
    """Nearest first; ties broken by driver id so the order is stable."""

    def distance(d: D) -> float:
        return haversine_m(pickup, Point(lat=d.lat or 0.0, lng=d.lng or 0.0))

    return sorted(drivers, key=lambda d: (distance(d), d.driver_id))
