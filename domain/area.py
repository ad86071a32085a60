"""The service area: where a ride may start and end (RIDEHAIL_SERVICE_AREA).

An area is a circle (a centre and a radius) or a polygon (a GeoJSON Polygon, holes
included). Plain values with a ``contains`` test; ``infra.config`` builds one from the
setting, and the API refuses a pickup or dropoff outside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from domain.geo import Point, haversine_m

# A pickup and its dropoff at least this far apart: a shorter trip is no trip at all.
MIN_TRIP_M = 100.0
# A GeoJSON position is [longitude, latitude] (RFC 7946 section 3.1.1).
Ring = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Circle:
    """Every point within ``radius_m`` of ``centre`` (great-circle distance)."""

    centre: Point
    radius_m: float

    def contains(self, p: Point) -> bool:
        return haversine_m(self.centre, p) <= self.radius_m

    def describe(self) -> str:
        return (f"within {self.radius_m / 1000:g} km of "
                f"{self.centre.lat:g},{self.centre.lng:g}")


@dataclass(frozen=True)
class Polygon:
    """A GeoJSON polygon: inside the first ring and outside every other (its holes).

    The test is ray casting on plain longitude and latitude, which is exact enough for
    an area the size of a city (it does not cross the antimeridian or hold a pole)."""

    rings: tuple[Ring, ...]
    name: str

    def contains(self, p: Point) -> bool:
        inside = _in_ring(self.rings[0], p)
        return inside and not any(_in_ring(hole, p) for hole in self.rings[1:])

    def describe(self) -> str:
        return f"inside {self.name}"


Area = Circle | Polygon


def _in_ring(ring: Ring, p: Point) -> bool:
    """Whether ``p`` is inside ``ring``: a ray eastwards crosses its edges an odd number
    of times."""
    inside = False
    x, y = p.lng, p.lat
    j = len(ring) - 1
    for i in range(len(ring)):
        xi, yi = ring[i]
        xj, yj = ring[j]
        if (yi > y) != (yj > y) and x < xi + (y - yi) * (xj - xi) / (yj - yi):
            inside = not inside
        j = i
    return inside


def circle_of(text: str) -> Circle:
    """A circle from ``"lat,lng,radius_km"``; ValueError saying what is wrong."""
    parts = text.split(",")
    if len(parts) != 3:
        raise ValueError(f"{text!r} is neither LAT,LNG,RADIUS_KM nor a GeoJSON file")
    try:
        lat, lng, radius_km = (float(x) for x in parts)
    except ValueError:
        raise ValueError(f"{text!r}: LAT,LNG,RADIUS_KM must be numbers") from None
    if not (-90 <= lat <= 90 and -180 <= lng <= 180):
        raise ValueError(f"{text!r}: the centre must be a latitude and longitude in degrees")
    if not 0 < radius_km <= 1000:  # NaN too
        raise ValueError(f"{text!r}: the radius must be more than 0 and at most 1000 km")
    return Circle(Point(lat=lat, lng=lng), radius_km * 1000)


def polygon_of(geojson: Any, name: str) -> Polygon:
    """A polygon from a GeoJSON Polygon, or a Feature or one-feature FeatureCollection
    holding one; ValueError saying what is wrong."""
    if isinstance(geojson, dict) and geojson.get("type") == "FeatureCollection":
        features = geojson.get("features")
        if not isinstance(features, list) or len(features) != 1:
            raise ValueError("a FeatureCollection must hold exactly one Polygon feature")
        geojson = features[0]
    if isinstance(geojson, dict) and geojson.get("type") == "Feature":
        properties = geojson.get("properties") or {}
        if isinstance(properties, dict) and isinstance(properties.get("name"), str):
            name = f"{properties['name']} ({name})"
        geojson = geojson.get("geometry")
    if not isinstance(geojson, dict) or geojson.get("type") != "Polygon":
        raise ValueError("not a GeoJSON Polygon (nor a Feature holding one)")
    coordinates = geojson.get("coordinates")
    if not isinstance(coordinates, list) or not coordinates:
        raise ValueError("a Polygon's coordinates must be a list of rings")
    return Polygon(tuple(_ring(r) for r in coordinates), name)


def _ring(raw: Any) -> Ring:
    """One linear ring: at least four [lng, lat] positions, the last equal to the first."""
    if not isinstance(raw, list) or len(raw) < 4:
        raise ValueError("a ring must be a list of at least four [lng, lat] positions")
    ring: list[tuple[float, float]] = []
    for position in raw:
        if (not isinstance(position, list) or len(position) < 2
                or not all(_number(v) for v in position[:2])):
            raise ValueError(f"{position!r} is not a [lng, lat] position")
        lng, lat = float(position[0]), float(position[1])
        if not (-180 <= lng <= 180 and -90 <= lat <= 90):
            raise ValueError(f"{position!r} is not a [lng, lat] position in degrees")
        ring.append((lng, lat))
    if ring[0] != ring[-1]:
        raise ValueError("a ring must end where it starts")
    return tuple(ring)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def trip_problems(area: Area, max_trip_km: float, pickup: Point,
                  dropoff: Point) -> list[tuple[str, str]]:
    """What keeps a trip from ``pickup`` to ``dropoff`` from being served, as (field,
    message) pairs, the field ``pickup`` or ``dropoff``; empty when it may be."""
    problems = [(field, f"outside the service area ({area.describe()})")
                for field, p in (("pickup", pickup), ("dropoff", dropoff))
                if not area.contains(p)]
    straight_m = haversine_m(pickup, dropoff)
    if straight_m > max_trip_km * 1000:
        problems.append(("dropoff", f"the trip is {straight_m / 1000:,.1f} km in a straight "
                                    f"line; the longest is {max_trip_km:g} km"))
    elif straight_m < MIN_TRIP_M:
        problems.append(("dropoff", f"{straight_m:.0f} m from the pickup; pickup and dropoff "
                                    f"must be at least {MIN_TRIP_M:g} m apart"))
    return problems
