"""Issue 14's attacks, replayed against a running stack (real uvicorn, NATS, database):
each is refused. The limits run at their defaults here (the rest of the suite raises
them: tests/support/servers.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest

from infra.config import Settings, SettingsError
from infra.tokens import issue_token, not_a_number
from tests.support.stack import Stack, running_stack

PICKUP = {"lat": 40.75, "lng": -73.99}
DROPOFF = {"lat": 40.76, "lng": -73.97}
BODY = {"pickup": PICKUP, "dropoff": DROPOFF}
PROBLEM = "application/problem+json"
DEFAULTS = {name: Settings.model_fields[name].default
            for name in ("rate_limit_quotes", "rate_limit_writes", "rate_limit_anonymous",
                         "sse_streams_per_subject")}


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Stack]:
    """The API alone, with the default limits."""
    async with running_stack(settings.model_copy(update=DEFAULTS),
                             components=("api",)) as stack:
        yield stack


def assert_problem(r: httpx.Response, status: int) -> dict:  # type: ignore[type-arg]
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    body = r.json()
    assert body["status"] == status and body["detail"]
    return body  # type: ignore[no-any-return]


# --- 3. one open ride per rider ---------------------------------------------------------


async def test_one_open_ride_per_rider_even_when_requests_race(api: Stack) -> None:
    answers = await asyncio.gather(*(
        api.http.post("/v1/rides", json=BODY, headers=api.auth("rider", "greedy"))
        for _ in range(12)))
    won = [a for a in answers if a.status_code == 202]
    assert len(won) == 1, [a.status_code for a in answers]
    ride_id = won[0].json()["ride_id"]
    for refused in (a for a in answers if a.status_code != 202):
        body = assert_problem(refused, 409)
        assert body["open_ride_id"] == ride_id and ride_id in body["detail"]
    # surge counts riders, not requests: one rider's burst is one open request
    quote = await api.call("POST", "/v1/quotes", "rider", "bystander", want=201, json=BODY)
    assert quote.json()["surge_multiplier"] == 1.0
    # once cancelled (ended), the rider may ask again: the API alone leaves it
    # requested, so end it the way the saga would, in the read model
    def end(session) -> None:  # type: ignore[no-untyped-def]
        from store.tables import Ride
        ride = session.get(Ride, ride_id)
        ride.status = "cancelled"
        session.add(ride)

    await api.db.write(end)
    await api.call("POST", "/v1/rides", "rider", "greedy", want=202, json=BODY)


async def test_an_idempotent_repeat_is_not_a_second_ride(api: Stack) -> None:
    headers = {**api.auth("rider", "careful"), "Idempotency-Key": "once"}
    first = await api.http.post("/v1/rides", json=BODY, headers=headers)
    again = await api.http.post("/v1/rides", json=BODY, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["ride_id"] == first.json()["ride_id"]
    assert again.headers["idempotent-replayed"] == "true"


# --- 4. rate limits ---------------------------------------------------------------------


async def test_a_burst_of_quotes_meets_429_with_retry_after(api: Stack) -> None:
    headers = api.auth("rider", "scraper")
    answers = [await api.http.post("/v1/quotes", json=BODY, headers=headers)
               for _ in range(120)]
    codes = [a.status_code for a in answers]
    assert set(codes) == {201, 429}, codes
    # within a window, exactly the allowance; a burst straddling two windows gets what was
    # left of the first and a second whole allowance
    allowance = DEFAULTS["rate_limit_quotes"]
    assert allowance <= codes.count(201) <= 2 * allowance, codes
    refused = answers[codes.index(429)]
    assert_problem(refused, 429)
    assert 1 <= int(refused.headers["retry-after"]) <= Settings().rate_limit_window_s
    # another rider is not held back by this one
    await api.call("POST", "/v1/quotes", "rider", "someone-else", want=201, json=BODY)


async def test_limits_are_shared_by_every_api_process(settings: Settings) -> None:
    """Two API processes on one database: the allowance is one, not one each."""
    limited = settings.model_copy(update={**DEFAULTS, "rate_limit_quotes": 4})
    other = limited.model_copy(update={"api_port": _free_port()})
    async with running_stack(limited, components=("api",)) as a, \
            running_stack(other, components=("api",), reset=False) as b:
        codes = [(await stack.http.post("/v1/quotes", json=BODY,
                                        headers=stack.auth("rider", "split"))).status_code
                 for stack in (a, b) * 4]
    assert 4 <= codes.count(201) <= 8 and 429 in codes, codes


async def test_requests_without_a_valid_token_are_limited_by_address(
        settings: Settings) -> None:
    """Forged, and also signed but refused by the route (a role nobody has, an exp that
    is not a number): none has an allowance of its own under its ``sub``."""
    limited = settings.model_copy(update={**DEFAULTS, "rate_limit_anonymous": 5})
    secret = limited.require_jwt_secret()
    later = int(time.time()) + 3600
    signed = [jwt.encode(claims, secret, algorithm="HS256") for claims in (
        {"sub": "ann", "role": "pilot", "iat": later - 3600, "exp": later},
        {"sub": "ann", "role": "rider", "iat": later - 3600, "exp": str(later)},
    )]
    assert limited.rate_limit_writes > 12
    async with running_stack(limited, components=("api",)) as api:
        for token in ("forged", *signed):
            codes = [(await api.http.post("/v1/rides", json=BODY, headers={
                "Authorization": f"Bearer {token}"})).status_code for _ in range(12)]
            # all on one counter, the address's: refused once it is used up
            assert set(codes) <= {401, 429} and 429 in codes, (token, codes)


def _free_port() -> int:
    from tests.support.servers import free_port

    return free_port()


# --- 7. tokens and secrets --------------------------------------------------------------


async def test_an_exp_that_is_not_a_number_is_refused(api: Stack) -> None:
    secret = api.settings.require_jwt_secret()
    for exp in (str(int(time.time()) + 3600), "tomorrow"):
        token = jwt.encode({"sub": "ann", "role": "rider", "iat": int(time.time()),
                            "exp": exp}, secret, algorithm="HS256")
        r = await api.http.get("/v1/rides", headers={"Authorization": f"Bearer {token}"})
        assert assert_problem(r, 401)["detail"] == not_a_number("exp")
    assert (await api.call("GET", "/v1/rides", "rider", "ann")).status_code == 200


def test_a_short_secret_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="at least 32"):
        Settings(data_dir=tmp_path, jwt_secret="too-short").find_jwt_secret()
    (tmp_path / "jwt_secret").write_text("short\n")
    with pytest.raises(SettingsError, match="at least 32"):
        Settings(data_dir=tmp_path).find_jwt_secret()
    for command in (["token", "--role", "rider", "--sub", "ann"], ["api"]):
        env = {k: v for k, v in os.environ.items() if not k.startswith("RIDEHAIL_")}
        done = subprocess.run([str(Path(sys.executable).parent / "ridehail"), *command],
                              env={**env, "RIDEHAIL_JWT_SECRET": "x" * 31},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done
        assert "at least 32" in done.stderr


def test_the_secret_and_the_database_are_private_from_the_start(tmp_path: Path) -> None:
    from store.db import Database

    old = os.umask(0o022)  # a usual umask: files would be world-readable
    try:
        Settings(data_dir=tmp_path / "data").with_dev_secret()
        db = Database(f"sqlite:///{tmp_path / 'data' / 'ridehail.db'}")
        db.create_tables()
        db.dispose()
    finally:
        os.umask(old)
    for name in ("jwt_secret", "ridehail.db", "ridehail.db-wal", "ridehail.db-shm"):
        path = tmp_path / "data" / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    assert (tmp_path / "data" / "ridehail.db").exists()


async def test_readyz_shows_details_to_admins_only(servers: Settings, tmp_path: Path) -> None:
    import nats
    from temporalio.client import Client

    from api.app import create_app
    from api.services import Services
    from events.outbox import Outbox
    from store.db import Database

    db = Database(f"sqlite:///{tmp_path / 'ready.db'}")
    nc = await nats.connect(servers.nats_url)
    # a Temporal address nothing listens on: its check fails with an error text
    temporal = await Client.connect(f"127.0.0.1:{_free_port()}", lazy=True)
    js = nc.jetstream()
    app = create_app(servers, Services(servers, db, nc, js, Outbox(db, js, nc), temporal))
    admin = issue_token(servers.require_jwt_secret(), "admin", "ops")
    rider = issue_token(servers.require_jwt_secret(), "rider", "ann")
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
                for headers in ({}, {"Authorization": f"Bearer {rider}"}):
                    body = assert_problem(await http.get("/readyz", headers=headers), 503)
                    assert body["checks"]["temporal"] == "unavailable", body
                    assert body["detail"] == "Not ready: temporal unavailable"
                body = assert_problem(await http.get(
                    "/readyz", headers={"Authorization": f"Bearer {admin}"}), 503)
                assert body["checks"]["temporal"].startswith("unavailable: "), body
    finally:
        await nc.close()
        db.dispose()


# --- 6. bounded resources ---------------------------------------------------------------


async def _raw_request(host: str, port: int, head: bytes) -> bytes:
    """Send a request head as a client that does not stop for the server, then read
    what the server answered."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for i in range(0, len(head), 64 * 1024):
            try:
                writer.write(head[i:i + 64 * 1024])
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                break  # refused and closed while we were still sending
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_oversized_headers_are_431(api: Stack) -> None:
    host, port = api.settings.api_host, api.settings.api_port
    # a 1 MB header: refused while it arrives, before the app sees it
    t0 = time.monotonic()
    answer = await _raw_request(host, port, b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Big: "
                                + b"a" * 1_000_000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"application/problem+json" in answer and b'"status": 431' in answer
    assert time.monotonic() - t0 < 5
    # headers that arrive whole but add up to too much: the same, from the app
    r = await api.http.get("/healthz", headers={f"x-h{i}": "b" * 1000 for i in range(20)})
    assert_problem(r, 431)
    # and ordinary headers are fine
    assert (await api.http.get("/healthz")).status_code == 200


async def test_live_streams_are_capped_and_share_one_consumer(api: Stack) -> None:
    ride_id = (await api.call("POST", "/v1/rides", "rider", "watcher", want=202,
                              json=BODY)).json()["ride_id"]
    headers = {**api.auth("rider", "watcher"), "Accept": "text/event-stream"}
    path = f"/v1/rides/{ride_id}/events"

    async def consumers() -> int:
        return len(await api.rt.js.consumers_info("RIDES"))

    before = await consumers()
    async with contextlib.AsyncExitStack() as open_streams:
        answers = []
        for _ in range(20):
            r = await open_streams.enter_async_context(api.http.stream("GET", path,
                                                                       headers=headers))
            answers.append(r)
            if r.status_code == 200:
                # the stream is up once it sent the history (the requested event)
                lines = r.aiter_lines()
                while not (await anext(lines)).startswith("data:"):
                    pass
                open_streams.push_async_callback(lines.aclose)
        accepted = [r for r in answers if r.status_code == 200]
        refused = [r for r in answers if r.status_code != 200]
        assert len(accepted) == DEFAULTS["sse_streams_per_subject"], len(accepted)
        for r in refused:
            await r.aread()
            assert_problem(r, 429)
            assert int(r.headers["retry-after"]) > 0
        # all of them together: one consumer on RIDES (the process's fan-out)
        assert await consumers() == before + 1
        # another rider is not held back
        other = (await api.call("POST", "/v1/rides", "rider", "other", want=202,
                                json=BODY)).json()["ride_id"]
        async with api.http.stream("GET", f"/v1/rides/{other}/events",
                                   headers={**api.auth("rider", "other"),
                                            "Accept": "text/event-stream"}) as r:
            assert r.status_code == 200
