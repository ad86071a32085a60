"""Points on the map and the H3 cells ridehail indexes them by."""

from __future__ import annotations

import math

import h3
from pydantic import BaseModel, ConfigDict, Field

# Resolution 8 cells are ~0.74 km² (edge ~460 m): fine enough to rank nearby drivers,
# coarse enough that a ring of a few cells covers a city neighbourhood.
DRIVER_CELL_RES = 8
# Surge zones are coarser (resolution 7, edge ~1.2 km).
ZONE_CELL_RES = 7
EARTH_RADIUS_M = 6_371_008.8


class Point(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lat: float = Field(ge=-90, le=90, allow_inf_nan=False, description="Latitude in degrees")
    lng: float = Field(ge=-180, le=180, allow_inf_nan=False, description="Longitude in degrees")


def driver_cell(p: Point) -> str:
    cell: str = h3.latlng_to_cell(p.lat, p.lng, DRIVER_CELL_RES)  # h3 is untyped
    return cell


def zone_cell(p: Point) -> str:
    cell: str = h3.latlng_to_cell(p.lat, p.lng, ZONE_CELL_RES)  # h3 is untyped
    return cell


def haversine_m(a: Point, b: Point) -> float:
    """Great-circle distance in metres."""
    la1, la2 = math.radians(a.lat), math.radians(b.lat)
    dlat = la2 - la1
    dlng = math.radians(b.lng - a.lng)
    h = math.sin(dlat / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin(dlng / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))
