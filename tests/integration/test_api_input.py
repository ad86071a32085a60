"""Input is checked at the door: every invalid input is a 422 problem naming the
failing fields, an oversized body a 413, and the OpenAPI document says all of it."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

from tests.support.stack import Stack

PROBLEM = "application/problem+json"
PICKUP = {"lat": 40.75, "lng": -73.99}
DROPOFF = {"lat": 40.76, "lng": -73.97}
PROFILE = {"name": "Dora", "vehicle": {"make": "Kia", "model": "Niro", "plate": "RH-1"}}


def invalid(r: Any, *fields: str) -> dict[str, Any]:
    """Assert a 422 problem that names each of ``fields``."""
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    named = {e["field"] for e in body["errors"]}
    for field in fields:
        assert field in named, (field, body)
        assert field in body["detail"], body
    return body  # type: ignore[no-any-return]


async def test_coordinates_are_numbers_in_range(api: Stack) -> None:
    cases: list[tuple[Any, str]] = [
        ({"lat": 90.0001, "lng": 0}, "lat"),
        ({"lat": -91, "lng": 0}, "lat"),
        ({"lat": 0, "lng": 180.5}, "lng"),
        ({"lat": 0, "lng": -181}, "lng"),
        ({"lat": "40.75", "lng": -73.99}, "lat"),  # a string is not a number
        ({"lat": True, "lng": -73.99}, "lat"),
        ({"lat": None, "lng": -73.99}, "lat"),
        ({"lat": 40.75}, "lng"),
        ({"lat": 40.75, "lng": -73.99, "alt": 3}, "alt"),  # unknown fields are refused
    ]
    for point, field in cases:
        for path, role in (("/v1/quotes", "rider"), ("/v1/rides", "rider")):
            r = await api.call("POST", path, role, "ann", json={"pickup": point,
                                                                "dropoff": DROPOFF})
            invalid(r, f"body.pickup.{field}")
        await api.call("PUT", "/v1/drivers/me", "driver", "dora", want=200, json=PROFILE)
        invalid(await api.call("POST", "/v1/drivers/me/online", "driver", "dora", json=point),
                f"body.{field}")
        invalid(await api.call("POST", "/v1/drivers/me/location", "driver", "dora",
                               json=point), f"body.{field}")
    # JSON has no NaN or Infinity, but Python's parser reads them: refused all the same
    for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
        r = await api.http.post("/v1/quotes",
                                content=f'{{"pickup": {{"lat": {literal}, "lng": 0}}, '
                                        f'"dropoff": {{"lat": 0, "lng": 0}}}}',
                                headers={**api.auth("rider", "ann"),
                                         "Content-Type": "application/json"})
        invalid(r, "body.pickup.lat")
    # the edges are numbers in range, and integers are numbers: past the schema, they
    # are refused only for being outside the service area
    r = await api.call("POST", "/v1/quotes", "rider", "ann",
                       json={"pickup": {"lat": 90, "lng": -180},
                             "dropoff": {"lat": -90, "lng": 180}})
    invalid(r, "body.pickup", "body.dropoff")
    await api.call("POST", "/v1/quotes", "rider", "ann", want=201,
                   json={"pickup": {"lat": 41, "lng": -74}, "dropoff": PICKUP})


async def test_rides_within_reason(api: Stack) -> None:
    tokyo = {"lat": 35.68, "lng": 139.76}
    mid_atlantic = {"lat": 40.0, "lng": -40.0}
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"pickup": PICKUP, "dropoff": tokyo}, "body.dropoff", "service area"),
        ({"pickup": mid_atlantic, "dropoff": DROPOFF}, "body.pickup", "service area"),
        ({"pickup": PICKUP, "dropoff": PICKUP}, "body.dropoff", "at least 100 m apart"),
        ({"pickup": PICKUP, "dropoff": {"lat": 40.7505, "lng": -73.9905}}, "body.dropoff",
         "at least 100 m apart"),
        ({"pickup": PICKUP, "dropoff": DROPOFF, "payment_method": "bitcoin"},
         "body.payment_method", "pattern"),
    ]
    for body, field, says in cases:
        paths = ("/v1/rides",) if "payment_method" in body else ("/v1/quotes", "/v1/rides")
        for path in paths:
            problem = invalid(await api.call("POST", path, "rider", "ann", json=body), field)
            assert says in str(problem["errors"]), problem
    # the area is named, and New York to Tokyo is also too long a trip
    problem = invalid(await api.call("POST", "/v1/rides", "rider", "ann",
                                     json={"pickup": PICKUP, "dropoff": tokyo}))
    assert "within 40 km of 40.758,-73.9855" in problem["detail"], problem
    assert "the longest is 150 km" in problem["detail"], problem
    # nothing was booked: a ride in the area, with a saved payment method, still is
    ride = await api.call("POST", "/v1/rides", "rider", "ann", want=202,
                          json={"pickup": PICKUP, "dropoff": DROPOFF,
                                "payment_method": "pm_4f2a9c"})
    assert ride.json()["status"] == "requested", ride.text


async def test_bodies_and_fields(api: Stack) -> None:
    await api.call("PUT", "/v1/drivers/me", "driver", "dora", want=200, json=PROFILE)
    cases: list[tuple[str, str, str, Any, str]] = [
        ("POST", "/v1/rides", "rider", {"pickup": PICKUP}, "body.dropoff"),
        ("POST", "/v1/rides", "rider", {"pickup": PICKUP, "dropoff": DROPOFF,
                                        "quote_id": "no such/quote"}, "body.quote_id"),
        ("POST", "/v1/rides", "rider", {"pickup": PICKUP, "dropoff": DROPOFF,
                                        "quote_id": "0f1e2d3c"}, "body.quote_id"),  # unknown
        ("POST", "/v1/rides", "rider", {"pickup": PICKUP, "dropoff": DROPOFF,
                                        "payment_method": "Card Declined"},
         "body.payment_method"),
        ("POST", "/v1/rides", "rider", [PICKUP, DROPOFF], "body"),
        ("PUT", "/v1/drivers/me", "driver", {**PROFILE, "name": ""}, "body.name"),
        ("PUT", "/v1/drivers/me", "driver", {**PROFILE, "name": "x" * 201}, "body.name"),
        # PostgreSQL cannot store NUL, and one-line fields take no control characters
        ("PUT", "/v1/drivers/me", "driver", {**PROFILE, "name": "Do\x00ra"}, "body.name"),
        ("PUT", "/v1/drivers/me", "driver", {**PROFILE, "name": "Do\nra"}, "body.name"),
        ("PUT", "/v1/drivers/me", "driver",
         {**PROFILE, "vehicle": {"make": "Kia", "model": "Niro", "plate": "P" * 33}},
         "body.vehicle.plate"),
        ("PUT", "/v1/drivers/me", "driver", {"name": "Dora"}, "body.vehicle"),
        ("POST", "/v1/rides/some-ride/cancel", "rider", {"reason": "r" * 501}, "body.reason"),
        ("POST", "/v1/rides/some-ride/cancel", "rider", {"reason": 7}, "body.reason"),
        ("POST", "/v1/rides/some-ride/complete", "driver", {"distance_m": -1, "duration_s": 1},
         "body.distance_m"),
        ("POST", "/v1/rides/some-ride/complete", "driver",
         {"distance_m": 12.5, "duration_s": "60"}, "body.distance_m"),
        ("POST", "/v1/rides/some-ride/complete", "driver",
         {"distance_m": 10, "duration_s": 86_401}, "body.duration_s"),
        ("POST", "/v1/rides/some-ride/complete", "driver",
         {"distance_m": 2_000_001, "duration_s": 60}, "body.distance_m"),
    ]
    for method, path, role, body, field in cases:
        r = await api.call(method, path, role, "someone" if role != "driver" else "dora",
                           json=body)
        invalid(r, field)
    # several failures are named together
    r = await api.call("POST", "/v1/rides", "rider", "ann",
                       json={"pickup": {"lat": 100, "lng": 0}, "dropoff": {"lat": 0}})
    invalid(r, "body.pickup.lat", "body.dropoff.lng")
    # a whole-number float is an integer (as JSON Schema says)
    r = await api.call("POST", "/v1/rides/some-ride/complete", "driver", "dora",
                       json={"distance_m": 1000.0, "duration_s": 60})
    assert r.status_code == 404


async def test_malformed_bodies(api: Stack) -> None:
    headers = {**api.auth("rider", "ann"), "Content-Type": "application/json"}
    for raw in (b"{", b'{"pickup": ', b"\xff\xfe not utf-8", b"", b"null"):
        r = await api.http.post("/v1/rides", content=raw, headers=headers)
        invalid(r, "body")
    r = await api.http.post("/v1/rides", content=b"pickup=here",
                            headers={**headers, "Content-Type": "text/plain"})
    invalid(r, "body")


async def test_path_query_and_header_values(api: Stack) -> None:
    for bad_id in ("a.b", "*", "x" * 65, "%20", "ride%00"):
        invalid(await api.call("GET", f"/v1/rides/{bad_id}", "rider", "ann"), "path.ride_id")
    for query, field in (("limit=0", "query.limit"), ("limit=101", "query.limit"),
                         ("limit=ten", "query.limit"), ("status=flying", "query.status"),
                         ("cursor=!!", "query.cursor"), ("cursor=AAAA", "query.cursor")):
        invalid(await api.call("GET", f"/v1/rides?{query}", "rider", "ann"), field)
    # a cursor of the right shape but not ours (a naive time) is refused, not a crash
    forged = base64.urlsafe_b64encode(b"2026-01-01T00:00:00|abc").decode().rstrip("=")
    invalid(await api.call("GET", f"/v1/rides?cursor={forged}", "rider", "ann"),
            "query.cursor")
    for key in ("has space", "é", "k" * 256):
        r = await api.http.post("/v1/rides", json={"pickup": PICKUP, "dropoff": DROPOFF},
                                headers={**api.auth("rider", "ann"),
                                         "Idempotency-Key": key.encode()})
        invalid(r, "header.Idempotency-Key")
    invalid(await api.http.get("/v1/rides/abc/events",
                               headers={**api.auth("rider", "ann"), "Last-Event-ID": "x"}),
            "header.Last-Event-Id")
    for letter in ("0", "x", str(2**64)):
        invalid(await api.call("POST", f"/v1/admin/dlq/{letter}/redrive", "admin", "root"),
                "path.letter_id")


async def test_oversized_bodies_are_413(api: Stack) -> None:
    huge = {"pickup": PICKUP, "dropoff": DROPOFF, "payment_method": "card", "pad": "x" * 40_000}
    r = await api.call("POST", "/v1/rides", "rider", "ann", json=huge)
    assert r.status_code == 413 and r.headers["content-type"].startswith(PROBLEM), r.text
    assert r.json()["status"] == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(64):
            yield b" " * 1024

    r = await api.http.post("/v1/rides", content=chunks(),
                            headers={**api.auth("rider", "ann"),
                                     "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["status"] == 413
    # under the limit, the body reaches validation as usual
    r = await api.call("POST", "/v1/rides", "rider", "ann", json={**huge, "pad": "x" * 1000})
    invalid(r, "body.pad")
    metrics = (await api.http.get("/metrics")).text
    assert 'route="/v1/rides",status="413"' in metrics


async def test_unknown_routes_and_methods_are_problems(api: Stack) -> None:
    r = await api.call("GET", "/v1/nothing-here", "rider", "ann")
    assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM)
    r = await api.call("DELETE", "/v1/rides", "rider", "ann")
    assert r.status_code == 405 and r.headers["content-type"].startswith(PROBLEM)
    assert set(r.headers["allow"].split(", ")) == {"GET", "POST"}


async def test_openapi_documents_every_answer(api: Stack) -> None:
    spec = (await api.http.get("/openapi.json")).json()
    components = spec["components"]["schemas"]
    assert "ProblemDetails" in components
    expected = {
        ("post", "/v1/quotes"), ("post", "/v1/rides"), ("get", "/v1/rides"),
        ("get", "/v1/rides/{ride_id}"), ("get", "/v1/rides/{ride_id}/events"),
        ("post", "/v1/rides/{ride_id}/cancel"), ("post", "/v1/rides/{ride_id}/accept"),
        ("post", "/v1/rides/{ride_id}/decline"), ("post", "/v1/rides/{ride_id}/arrive"),
        ("post", "/v1/rides/{ride_id}/start"), ("post", "/v1/rides/{ride_id}/complete"),
        ("put", "/v1/drivers/me"), ("get", "/v1/drivers/me"),
        ("post", "/v1/drivers/me/online"), ("post", "/v1/drivers/me/offline"),
        ("post", "/v1/drivers/me/location"), ("get", "/v1/drivers/me/offers"),
        ("get", "/v1/admin/dlq"), ("post", "/v1/admin/dlq/{letter_id}/redrive"),
        ("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics"),
    }
    found = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert expected <= found, expected - found
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            assert op.get("summary") and op.get("description"), where
            success = [c for c in op["responses"] if c.startswith("2")]
            assert success and all(op["responses"][c].get("content") for c in success), where
            for code, response in op["responses"].items():
                if code[0] in "45":
                    assert list(response["content"]) == [PROBLEM], where
            if path.startswith("/v1"):
                assert op["security"] == [{"HTTPBearer": []}], where
                assert "401" in op["responses"] and "503" in op["responses"], where
            if "requestBody" in op:
                assert {"413", "422"} <= set(op["responses"]), where
                ref = op["requestBody"]["content"]["application/json"]["schema"]
                ref = ref.get("$ref") or next(v["$ref"] for v in ref["anyOf"] if "$ref" in v)
                body = components[ref.rsplit("/", 1)[1]]
                assert body["additionalProperties"] is False, where
    # live streams are documented as alternatives of the same answer
    for path in ("/v1/rides/{ride_id}/events", "/v1/drivers/me/offers"):
        content = spec["paths"][path]["get"]["responses"]["200"]["content"]
        assert set(content) == {"application/json", "text/event-stream"}
    docs = await api.http.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
