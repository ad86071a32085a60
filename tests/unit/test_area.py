"""The service area and the trip rules (RIDEHAIL_SERVICE_AREA, RIDEHAIL_MAX_TRIP_KM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domain.area import Circle, circle_of, polygon_of, trip_problems
from domain.geo import Point
from infra.config import Settings
from ridehail.load.city import City

TIMES_SQUARE = Point(lat=40.758, lng=-73.9855)
JFK = Point(lat=40.6413, lng=-73.7781)
NEWARK = Point(lat=40.6895, lng=-74.1745)
TOKYO = Point(lat=35.68, lng=139.76)
MID_ATLANTIC = Point(lat=40.0, lng=-40.0)
# Manhattan, roughly, with Central Park as a hole ([lng, lat], as GeoJSON has it)
MANHATTAN = {"type": "Polygon", "coordinates": [
    [[-74.02, 40.70], [-73.97, 40.71], [-73.93, 40.80], [-73.91, 40.87], [-73.94, 40.88],
     [-74.01, 40.76], [-74.02, 40.70]],
    [[-73.982, 40.768], [-73.958, 40.800], [-73.949, 40.797], [-73.973, 40.764],
     [-73.982, 40.768]],
]}


def test_the_default_area_is_new_york_and_holds_every_place_we_ride() -> None:
    area = Settings().area
    assert isinstance(area, Circle) and area.radius_m == 40_000
    for p in (TIMES_SQUARE, JFK, NEWARK, Point(lat=40.75, lng=-73.99),
              Point(lat=40.76, lng=-73.97), Point(lat=40.7505, lng=-73.9905)):
        assert area.contains(p), p
    for p in (TOKYO, MID_ATLANTIC, Point(lat=90, lng=-180), Point(lat=-90, lng=180)):
        assert not area.contains(p), p
    city = City()  # the simulator's and the bench's
    assert City().radius_m + 0 < area.radius_m
    assert area.contains(city.centre)


def test_a_circle_from_text() -> None:
    c = circle_of("51.5, -0.12, 25")
    assert c.contains(Point(lat=51.6, lng=-0.2)) and not c.contains(TIMES_SQUARE)
    assert c.describe() == "within 25 km of 51.5,-0.12"
    for bad in ("51.5,-0.12", "a,b,c", "91,0,10", "0,0,0", "0,0,nan", "0,0,5000"):
        with pytest.raises(ValueError):
            circle_of(bad)


def test_a_polygon_with_a_hole() -> None:
    manhattan = polygon_of(MANHATTAN, "manhattan.geojson")
    assert manhattan.contains(TIMES_SQUARE)
    assert manhattan.contains(Point(lat=40.75, lng=-73.99))
    assert not manhattan.contains(Point(lat=40.782, lng=-73.965))  # Central Park: the hole
    assert not manhattan.contains(JFK) and not manhattan.contains(NEWARK)
    assert not manhattan.contains(TOKYO)
    assert manhattan.describe() == "inside manhattan.geojson"
    feature = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "Manhattan"}, "geometry": MANHATTAN}]}
    assert polygon_of(feature, "m.json").describe() == "inside Manhattan (m.json)"


@pytest.mark.parametrize("bad", [
    {"type": "Point", "coordinates": [0, 0]},
    {"type": "Polygon", "coordinates": []},
    {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 1]]]},  # too few positions
    {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]},  # not closed
    {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, "x"], [0, 0]]]},
    {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 200], [0, 0]]]},
    {"type": "FeatureCollection", "features": []},
    [1, 2],
])
def test_what_is_not_a_polygon(bad: object) -> None:
    with pytest.raises(ValueError):
        polygon_of(bad, "x")


def test_the_setting_takes_a_file_or_a_circle(tmp_path: Path) -> None:
    path = tmp_path / "manhattan.geojson"
    path.write_text(json.dumps(MANHATTAN))
    assert Settings(service_area=str(path)).area.contains(TIMES_SQUARE)
    assert not Settings(service_area="51.5,-0.12,25").area.contains(TIMES_SQUARE)
    (tmp_path / "broken.geojson").write_text("{")
    for bad, says in (("1,2", "cannot be read"), ("0,0,-1", "radius"),
                      (str(tmp_path / "broken.geojson"), "not JSON"),
                      (str(tmp_path / "none.geojson"), "cannot be read")):
        with pytest.raises(ValueError, match=says):
            Settings(service_area=bad)
    with pytest.raises(ValueError):
        Settings(max_trip_km=0)


def test_trip_problems() -> None:
    area = Settings().area
    near = Point(lat=40.76, lng=-73.97)
    assert trip_problems(area, 150, TIMES_SQUARE, near) == []
    assert trip_problems(area, 150, TIMES_SQUARE, JFK) == []
    said = [message for _, message in trip_problems(area, 150, TIMES_SQUARE, TOKYO)]
    assert "outside the service area (within 40 km of 40.758,-73.9855)" in said
    assert trip_problems(area, 150, MID_ATLANTIC, TIMES_SQUARE)[0][0] == "pickup"
    assert "150 km" in str(trip_problems(area, 150, TIMES_SQUARE, TOKYO))
    assert "at least 100 m apart" in str(trip_problems(area, 150, TIMES_SQUARE, TIMES_SQUARE))
    assert trip_problems(area, 20, TIMES_SQUARE, JFK)  # ~21 km: over a 20 km longest trip
