"""The simulated city of ``ridehail simulate`` and ``ridehail bench``: a disc on the map,
random places and trips in it, and straight-line movement between points."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from domain.geo import EARTH_RADIUS_M, Point, haversine_m


@dataclass(frozen=True)
class City:
    """A disc on the map: ``radius_m`` around a centre."""

    lat: float = 40.758
    lng: float = -73.9855
    radius_m: float = 3000.0

    @classmethod
    def parse(cls, centre: str, radius_km: float) -> City:
        """From ``"lat,lng"`` and a radius in km."""
        try:
            lat_text, lng_text = centre.split(",")
            Point(lat=float(lat_text), lng=float(lng_text))  # validates the ranges
        except ValueError:
            raise ValueError(f"--centre must be LAT,LNG in degrees, not {centre!r}") from None
        if not 0.1 <= radius_km <= 50:
            raise ValueError("--radius-km must be between 0.1 and 50")
        return cls(float(lat_text), float(lng_text), radius_km * 1000)

    @property
    def centre(self) -> Point:
        return Point(lat=self.lat, lng=self.lng)

    def random_point(self, rng: random.Random) -> Point:
        """Uniform over the disc."""
        r = self.radius_m * math.sqrt(rng.random())
        theta = rng.uniform(0, 2 * math.pi)
        return offset(self.centre, r * math.cos(theta), r * math.sin(theta))

    def random_trip(self, rng: random.Random, min_m: float = 500.0) -> tuple[Point, Point]:
        """A pickup and a dropoff at least ``min_m`` apart (when the city allows it)."""
        pickup = self.random_point(rng)
        dropoff = self.random_point(rng)
        for _ in range(20):
            if haversine_m(pickup, dropoff) >= min(min_m, self.radius_m):
                break
            dropoff = self.random_point(rng)
        return pickup, dropoff


def offset(p: Point, north_m: float, east_m: float) -> Point:
    """The point ``north_m`` north and ``east_m`` east of ``p`` (small distances)."""
    dlat = math.degrees(north_m / EARTH_RADIUS_M)
    dlng = math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(p.lat))))
    return Point(lat=p.lat + dlat, lng=p.lng + dlng)


def towards(a: Point, b: Point, metres: float) -> Point:
    """The point ``metres`` from ``a`` on the straight line to ``b`` (``b`` if closer)."""
    d = haversine_m(a, b)
    if d <= metres or d == 0:
        return b
    f = metres / d
    return Point(lat=a.lat + (b.lat - a.lat) * f, lng=a.lng + (b.lng - a.lng) * f)


def coords(p: Point) -> dict[str, float]:
    return {"lat": round(p.lat, 6), "lng": round(p.lng, 6)}
