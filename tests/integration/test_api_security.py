"""Who may do what: tokens are verified (signature, algorithm, expiry, claims), roles are
enforced (403), a ride exists only for its rider, the drivers it was offered or assigned
to and admins (404 for everyone else, the same 404 as for a ride that does not exist),
and a driver acts only on their own rides and only in the right state (409)."""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta
from typing import Any

import jwt
import pytest
from sqlmodel import Session

from api.auth import MISSING
from domain.status import RideStatus
from infra.tokens import (
    BAD_SIGNATURE,
    BAD_SUB,
    EXPIRED,
    MALFORMED,
    NOT_YET_VALID,
    UNKNOWN_ROLE,
    missing_claim,
    too_long,
)
from store.tables import Offer, Ride, utcnow
from tests.support.problems import RFC9110_PHRASES
from tests.support.stack import Stack

PROBLEM = "application/problem+json"
PICKUP = {"lat": 40.75, "lng": -73.99}
DROPOFF = {"lat": 40.76, "lng": -73.97}


def assert_problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    body = r.json()
    assert body["status"] == status and body["detail"]
    assert body["type"] == "about:blank" and body["title"] == RFC9110_PHRASES[status]
    return body  # type: ignore[no-any-return]


def token(secret: str, **claims: Any) -> str:
    now = int(time.time())
    return jwt.encode({"sub": "alice", "role": "rider", "iat": now, "exp": now + 600, **claims},
                      secret, algorithm="HS256")


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the HS512 one
async def test_tokens_are_verified(api: Stack) -> None:
    secret = api.settings.require_jwt_secret()
    good = token(secret)
    header, _, signature = good.split(".")
    now = int(time.time())
    bad_tokens = {
        "expired": token(secret, exp=now - 5),
        "signed with another secret": token("another-secret-" + "y" * 20),
        # a rider who edits their token to say admin: the signature no longer matches
        "forged role": ".".join([header, b64({"sub": "alice", "role": "admin",
                                              "exp": now + 600}), signature]),
        "unknown role": token(secret, role="superuser"),
        "no role": jwt.encode({"sub": "alice", "exp": now + 600}, secret, algorithm="HS256"),
        "no exp": jwt.encode({"sub": "alice", "role": "rider"}, secret, algorithm="HS256"),
        "no sub": jwt.encode({"role": "rider", "exp": now + 600}, secret, algorithm="HS256"),
        "sub unfit for an id": token(secret, sub="a.b *"),
        "not yet valid": token(secret, nbf=now + 600),
        "alg none": ".".join([b64({"alg": "none", "typ": "JWT"}),
                              b64({"sub": "alice", "role": "admin", "exp": now + 600}), ""]),
        "another algorithm": jwt.encode({"sub": "alice", "role": "rider", "exp": now + 600},
                                        secret, algorithm="HS512"),
        "garbage": "not-a-token",
    }
    says = {"expired": EXPIRED, "signed with another secret": BAD_SIGNATURE,
            "forged role": BAD_SIGNATURE, "unknown role": UNKNOWN_ROLE,
            "no role": missing_claim("role"), "no exp": missing_claim("exp"),
            "no sub": missing_claim("sub"), "sub unfit for an id": BAD_SUB,
            "not yet valid": NOT_YET_VALID, "alg none": BAD_SIGNATURE,
            "another algorithm": BAD_SIGNATURE, "garbage": MALFORMED}
    for what, bad in bad_tokens.items():
        r = await api.http.get("/v1/rides", headers={"Authorization": f"Bearer {bad}"})
        body = assert_problem(r, 401)
        assert r.headers["www-authenticate"] == "Bearer", what
        assert body["detail"] == says[what], what

    for headers in ({}, {"Authorization": f"Basic {good}"}, {"Authorization": good},
                    {"Authorization": "Bearer"}):
        body = assert_problem(await api.http.get("/v1/rides", headers=headers), 401)
        assert body["detail"] == MISSING

    r = await api.http.get("/v1/rides", headers={"Authorization": f"Bearer {good}"})
    assert r.status_code == 200, r.text


async def test_long_lived_and_garbage_tokens_are_refused_in_plain_words(api: Stack) -> None:
    """A token good until the year 9999 is refused (RIDEHAIL_JWT_MAX_TTL_S, a day by
    default), with an ``iat`` or without one; a token of bytes that are not UTF-8 is
    "malformed", with nothing of the decoder's own words; a day exactly is accepted."""
    secret = api.settings.require_jwt_secret()
    now = int(time.time())
    max_ttl_s = api.settings.jwt_max_ttl_s
    garbage = ".".join([base64.urlsafe_b64encode(b"\xb7\xfe\xff").decode(), b64({}), "x"])
    refused = {
        token(secret, exp=253402300799): too_long(max_ttl_s),
        token(secret, iat=now - 2 * max_ttl_s, exp=now + 600): too_long(max_ttl_s),
        jwt.encode({"sub": "alice", "role": "rider", "exp": 253402300799}, secret,
                   algorithm="HS256"): too_long(max_ttl_s),
        garbage: MALFORMED,
    }
    for bad, detail in refused.items():
        for method, path in (("GET", "/v1/rides"), ("POST", "/v1/quotes")):
            r = await api.http.request(method, path, headers={"Authorization": f"Bearer {bad}"},
                                       json={"pickup": PICKUP, "dropoff": DROPOFF})
            body = assert_problem(r, 401)
            assert body["detail"] == detail and r.headers["www-authenticate"] == "Bearer"
            for internal in ("utf-8", "codec", "0xb7", "Invalid header"):
                assert internal not in r.text
    a_day = token(secret, exp=now + max_ttl_s)
    r = await api.http.get("/v1/rides", headers={"Authorization": f"Bearer {a_day}"})
    assert r.status_code == 200, r.text


async def test_roles(api: Stack) -> None:
    """A good token of the wrong role is a 403, whatever the ride."""
    ride = "0123456789abcdef"
    forbidden = [
        ("POST", "/v1/quotes", "driver", {"pickup": PICKUP, "dropoff": DROPOFF}),
        ("POST", "/v1/rides", "driver", {"pickup": PICKUP, "dropoff": DROPOFF}),
        ("POST", "/v1/rides", "admin", {"pickup": PICKUP, "dropoff": DROPOFF}),
        ("GET", "/v1/drivers/me", "rider", None),
        ("PUT", "/v1/drivers/me", "admin", {"name": "X", "vehicle": {
            "make": "a", "model": "b", "plate": "c"}}),
        ("POST", "/v1/drivers/me/online", "rider", PICKUP),
        ("GET", "/v1/drivers/me/offers", "rider", None),
        ("POST", f"/v1/rides/{ride}/accept", "rider", None),
        ("POST", f"/v1/rides/{ride}/decline", "admin", None),
        ("POST", f"/v1/rides/{ride}/arrive", "rider", None),
        ("POST", f"/v1/rides/{ride}/start", "admin", None),
        ("POST", f"/v1/rides/{ride}/complete", "rider", {"distance_m": 1, "duration_s": 1}),
        ("GET", "/v1/admin/dlq", "rider", None),
        ("GET", "/v1/admin/dlq", "driver", None),
        ("POST", "/v1/admin/dlq/1/redrive", "driver", None),
    ]
    for method, path, role, body in forbidden:
        r = await api.call(method, path, role, "someone", json=body)
        assert_problem(r, 403)
    # health and metrics need no token
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await api.http.get(path)).status_code == 200


def _ride(ride_id: str, rider: str, *, status: str = "matching",
          driver: str | None = None) -> Ride:
    return Ride(ride_id=ride_id, rider_id=rider, status=status, driver_id=driver,
                pickup_lat=PICKUP["lat"], pickup_lng=PICKUP["lng"],
                dropoff_lat=DROPOFF["lat"], dropoff_lng=DROPOFF["lng"])


def _offer(ride_id: str, driver: str, *, status: str = "pending") -> Offer:
    return Offer(offer_id=f"{ride_id}:{driver}", ride_id=ride_id, driver_id=driver,
                 status=status, pickup_lat=PICKUP["lat"], pickup_lng=PICKUP["lng"],
                 dropoff_lat=DROPOFF["lat"], dropoff_lng=DROPOFF["lng"], fare_cents=1240,
                 expires_at=utcnow() + timedelta(minutes=10))


async def test_rides_are_visible_only_to_their_parties(api: Stack) -> None:
    # ann's ride is offered to dora; ben's ride is assigned to dan (dora was offered it
    # first and declined)
    def setup(session: Session) -> None:
        session.add_all([
            _ride("ride-ann", "ann"), _offer("ride-ann", "dora"),
            _ride("ride-ben", "ben", status=RideStatus.DRIVER_ASSIGNED, driver="dan"),
            _offer("ride-ben", "dora", status="declined"),
            _offer("ride-ben", "dan", status="accepted"),
        ])

    await api.db.write(setup)
    unknown = await api.call("GET", "/v1/rides/ride-nobody", "rider", "ann")
    not_found = assert_problem(unknown, 404)

    async def sees(role: str, sub: str, ride: str) -> bool:
        r = await api.call("GET", f"/v1/rides/{ride}", role, sub)
        if r.status_code == 404:
            # indistinguishable from a ride that does not exist: ids cannot be probed
            assert r.json() == not_found
            events = await api.call("GET", f"/v1/rides/{ride}/events", role, sub)
            assert_problem(events, 404)
            return False
        assert r.status_code == 200 and r.json()["ride_id"] == ride, r.text
        return True

    assert await sees("rider", "ann", "ride-ann")
    assert not await sees("rider", "ann", "ride-ben")
    assert not await sees("rider", "ben", "ride-ann")
    assert await sees("driver", "dora", "ride-ann")  # offered
    assert await sees("driver", "dora", "ride-ben")  # was offered
    assert await sees("driver", "dan", "ride-ben")  # assigned
    assert not await sees("driver", "dan", "ride-ann")
    assert not await sees("driver", "stranger", "ride-ann")
    assert not await sees("rider", "dan", "ride-ben")  # same id, other role: another user
    assert await sees("admin", "root", "ride-ann") and await sees("admin", "root", "ride-ben")

    async def listed(role: str, sub: str) -> set[str]:
        page = (await api.call("GET", "/v1/rides", role, sub, want=200)).json()
        return {r["ride_id"] for r in page["rides"]}

    assert await listed("rider", "ann") == {"ride-ann"}
    assert await listed("rider", "ben") == {"ride-ben"}
    assert await listed("driver", "dora") == {"ride-ann", "ride-ben"}
    assert await listed("driver", "dan") == {"ride-ben"}
    assert await listed("driver", "stranger") == set()
    assert await listed("admin", "root") == {"ride-ann", "ride-ben"}

    # another user's ride cannot be cancelled either, and it is the same 404
    assert (await api.call("POST", "/v1/rides/ride-ben/cancel", "rider", "ann")).json() \
        == not_found
    await api.call("POST", "/v1/rides/ride-ann/cancel", "rider", "ann", want=202,
                   json={"reason": "changed my mind"})


async def test_drivers_act_only_on_their_rides_in_the_right_state(api: Stack) -> None:
    def setup(session: Session) -> None:
        session.add_all([
            _ride("ride-offered", "ann"), _offer("ride-offered", "dora"),
            _ride("ride-assigned", "ben", status=RideStatus.DRIVER_ASSIGNED, driver="dan"),
            _offer("ride-assigned", "dan", status="accepted"),
            _ride("ride-done", "ann", status=RideStatus.COMPLETED, driver="dan"),
        ])

    await api.db.write(setup)
    trip = {"distance_m": 1000, "duration_s": 300}

    # someone else's ride: it does not exist for this driver
    for path in ("accept", "decline", "arrive", "start", "cancel"):
        assert_problem(await api.call("POST", f"/v1/rides/ride-assigned/{path}", "driver",
                                      "dora"), 404)
        assert_problem(await api.call("POST", f"/v1/rides/ride-offered/{path}", "driver",
                                      "dan"), 404)
    assert_problem(await api.call("POST", "/v1/rides/ride-assigned/complete", "driver",
                                  "dora", json=trip), 404)

    # offered, not assigned: may answer the offer, may not drive or cancel the ride
    for path in ("arrive", "start", "cancel"):
        body = assert_problem(await api.call("POST", f"/v1/rides/ride-offered/{path}",
                                             "driver", "dora"), 409)
        assert "assigned driver" in body["detail"]
    assert_problem(await api.call("POST", "/v1/rides/ride-offered/complete", "driver", "dora",
                                  json=trip), 409)
    accepted = await api.call("POST", "/v1/rides/ride-offered/accept", "driver", "dora",
                              want=202)
    assert accepted.json()["ride_id"] == "ride-offered" and accepted.json()["event_id"]

    # assigned: only the step the ride is ready for
    for path in ("accept", "decline"):  # the offer was answered
        assert_problem(await api.call("POST", f"/v1/rides/ride-assigned/{path}", "driver",
                                      "dan"), 409)
    assert_problem(await api.call("POST", "/v1/rides/ride-assigned/start", "driver", "dan"),
                   409)
    assert_problem(await api.call("POST", "/v1/rides/ride-assigned/complete", "driver", "dan",
                                  json=trip), 409)
    await api.call("POST", "/v1/rides/ride-assigned/arrive", "driver", "dan", want=202)

    # a ride that is over cannot be steered by anyone
    for role, sub in (("rider", "ann"), ("driver", "dan"), ("admin", "root")):
        assert_problem(await api.call("POST", "/v1/rides/ride-done/cancel", role, sub), 409)
    assert_problem(await api.call("POST", "/v1/rides/ride-done/arrive", "driver", "dan"), 409)
