"""The HTTP API as the load tools' riders and drivers use it — ``ridehail bench``,
``ridehail simulate``, the scripted scenarios and deploy/sizing/ride_load.py: one
connection pool, a bearer token per person signed with the stack's secret, live event
streams read as Server-Sent Events (the one SSE parser), the driver's reports retried
while the read model catches up, and ``poll_until`` (the one poll helper)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from domain.geo import Point
from ridehail.load.city import coords

if TYPE_CHECKING:
    import httpx

TERMINAL_EVENTS = frozenset({"ride.completed", "ride.cancelled", "ride.failed"})

T = TypeVar("T")


async def poll_until(check: Callable[[], Awaitable[T]], what: str, deadline: float,
                     interval_s: float = 0.1) -> T:
    """Call ``check`` every ``interval_s`` until it returns something truthy, and return
    that; ``deadline`` is a ``time.monotonic()`` instant. Raises TimeoutError naming
    ``what`` when the deadline passes first."""
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(interval_s)
    raise TimeoutError(f"timed out waiting for {what}")


class ApiError(RuntimeError):
    pass


@dataclass
class SseEvent:
    event: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """The events of a ``text/event-stream`` response (comments and pings skipped)."""
    event, last_id = "message", None
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield SseEvent(event, "\n".join(data), last_id)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            last_id = value


class Api:
    """The HTTP API as riders and drivers use it: one connection pool, a bearer token per
    person (signed here with the stack's secret, as ``ridehail token`` does)."""

    def __init__(self, base_url: str, secret: str, max_connections: int = 100,
                 timeout_s: float = 30.0, http: httpx.AsyncClient | None = None,
                 token_ttl_s: int = 86400) -> None:
        """``http``: a client of the caller's to use (tests pass theirs) instead of a
        new pool for ``base_url``. ``token_ttl_s``: how long each token lives, a day
        unless the API allows less (``RIDEHAIL_JWT_MAX_TTL_S``), which it would refuse."""
        import httpx

        from infra.tokens import issue_token

        self._issue = issue_token
        self._secret = secret
        self._token_ttl_s = token_ttl_s
        self._tokens: dict[tuple[str, str], str] = {}
        self.calls = 0
        self.http = http or httpx.AsyncClient(
            base_url=base_url, timeout=timeout_s,
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections))

    async def aclose(self) -> None:
        await self.http.aclose()

    def headers(self, role: str, sub: str) -> dict[str, str]:
        token = self._tokens.get((role, sub))
        if token is None:
            token = self._issue(self._secret, role, sub, self._token_ttl_s)  # type: ignore[arg-type]  # a plain str; the API judges the role
            self._tokens[(role, sub)] = token
        return {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, role: str, sub: str,
                   json_body: Any = None) -> httpx.Response:
        self.calls += 1
        return await self.http.request(method, path, headers=self.headers(role, sub),
                                       json=json_body)

    async def expect(self, method: str, path: str, role: str, sub: str, json_body: Any = None,
                     ok: tuple[int, ...] = (200, 201, 202)) -> Any:
        r = await self.call(method, path, role, sub, json_body)
        if r.status_code not in ok:
            raise ApiError(f"{method} {path} as {role} {sub}: {r.status_code} {r.text[:200]}")
        return r.json() if r.content else None

    @contextlib.asynccontextmanager
    async def stream(self, path: str, role: str, sub: str
                     ) -> AsyncIterator[AsyncIterator[SseEvent]]:
        """A live stream (``Accept: text/event-stream``) of ``path``, as Server-Sent
        Events."""
        import httpx

        headers = {**self.headers(role, sub), "Accept": "text/event-stream"}
        self.calls += 1
        async with self.http.stream("GET", path, headers=headers,
                                    timeout=httpx.Timeout(30.0, read=None)) as r:
            if r.status_code != 200:
                await r.aread()
                raise ApiError(f"GET {path} (event stream): {r.status_code} {r.text[:200]}")
            yield sse_events(r)

    def ride_events(self, ride_id: str, role: str, sub: str
                    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[SseEvent]]:
        """The ride's events as a live stream: its history, then events as they come."""
        return self.stream(f"/v1/rides/{ride_id}/events", role, sub)

    async def driver_online(self, driver_id: str, at: Point) -> None:
        await self.expect("PUT", "/v1/drivers/me", "driver", driver_id, {
            "name": f"Driver {driver_id}",
            "vehicle": {"make": "Toyota", "model": "Prius", "plate": driver_id[-10:]}})
        await self.expect("POST", "/v1/drivers/me/online", "driver", driver_id, coords(at))

    async def driver_report(self, ride_id: str, driver_id: str, action: str,
                            body: Any = None, deadline_s: float = 30.0) -> int:
        """POST a driver's report, retrying while the API answers 409 because the read
        model has not yet caught up with the previous step. Returns the retries."""
        path = f"/v1/rides/{ride_id}/{action}"
        deadline = time.monotonic() + deadline_s
        delay, retries = 0.01, 0
        while True:
            r = await self.call("POST", path, "driver", driver_id, body)
            if r.status_code == 202:
                return retries
            if r.status_code != 409 or time.monotonic() > deadline:
                raise ApiError(f"POST {path} as {driver_id}: {r.status_code} {r.text[:200]}")
            retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
