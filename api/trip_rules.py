"""Rides within reason: the checks a quote and a ride request share, apart from the
request schema because they depend on the settings (RIDEHAIL_SERVICE_AREA,
RIDEHAIL_MAX_TRIP_KM). The rules themselves are ``domain.area``'s."""

from __future__ import annotations

from api.problems import Problem
from domain.area import trip_problems
from domain.geo import Point
from domain.pricing import longest_route_m
from infra.config import Settings


def check_trip(settings: Settings, pickup: Point, dropoff: Point) -> None:
    """Raise a 422 naming ``body.pickup`` or ``body.dropoff`` when the trip is outside
    the service area, longer than the longest trip or too short to be one."""
    problems = trip_problems(settings.area, settings.max_trip_km, pickup, dropoff)
    if problems:
        errors = [{"field": f"body.{field}", "message": message}
                  for field, message in problems]
        fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
        said = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise Problem(422, f"Invalid input in {fields}: {said}", errors=errors)


def check_trip_report(settings: Settings, distance_m: int) -> None:
    """Raise a 422 naming ``body.distance_m`` when it is longer than any trip within
    RIDEHAIL_MAX_TRIP_KM can be driven."""
    longest = longest_route_m(settings.max_trip_km)
    if distance_m > longest:
        message = (f"{distance_m} m is longer than the longest trip may be driven "
                   f"({longest} m)")
        raise Problem(422, f"Invalid input in body.distance_m: {message}",
                      errors=[{"field": "body.distance_m", "message": message}])
