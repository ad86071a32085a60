"""A running ridehail for one test: worker, consumers, relay and API in this process,
against the session's Temporal and NATS and the test's own database."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from nats.js.errors import NotFoundError
from sqlmodel import Session
from temporalio.client import Client

from api.auth import issue_token
from events.streams import stream_configs
from infra.config import Settings
from infra.connections import connect_nats
from ridehail.processes.components import (
    CONSUMERS,
    Runtime,
    run_api,
    run_consumers,
    run_relay,
    run_temporal_worker,
    runtime,
)
from ridehail.processes.serverprocess import answering
from tests.support.problems import PROBLEM_JSON, problem_shape_errors

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], what: str, timeout: float = 20.0,
                     interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


async def reset_streams(settings: Settings) -> None:
    """Delete the streams (and so every durable consumer) a previous test left, whatever
    their configuration."""
    nc = await connect_nats(settings, "test-reset")
    try:
        for config in stream_configs():
            with contextlib.suppress(NotFoundError):
                await nc.jetstream().delete_stream(config.name)
    finally:
        await nc.close()


async def terminate_running(client: Client) -> None:
    """End the workflows a test left running, so the next test's worker does not pick
    them up against another database."""
    async for wf in client.list_workflows("ExecutionStatus='Running'"):
        with contextlib.suppress(Exception):
            await client.get_workflow_handle(wf.id, run_id=wf.run_id).terminate("test ended")


@dataclass
class Stack:
    settings: Settings
    rt: Runtime
    http: httpx.AsyncClient
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def db(self):  # type: ignore[no-untyped-def]
        return self.rt.db

    @property
    def temporal(self) -> Client:
        assert self.rt.temporal is not None
        return self.rt.temporal

    def auth(self, role: str, sub: str) -> dict[str, str]:
        token = issue_token(self.settings.require_jwt_secret(), role, sub)  # type: ignore[arg-type]
        return {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, role: str, sub: str, *, want: int | None = None,
                   **kw: Any) -> httpx.Response:
        r = await self.http.request(method, path, headers=self.auth(role, sub), **kw)
        if want is not None:
            assert r.status_code == want, f"{method} {path}: {r.status_code} {r.text}"
        return r

    async def ride(self, ride_id: str, rider: str) -> dict[str, Any]:
        return (await self.call("GET", f"/v1/rides/{ride_id}", "rider", rider, want=200)).json()

    async def wait_status(self, ride_id: str, rider: str, status: str,
                          timeout: float = 20.0) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            ride = await self.ride(ride_id, rider)
            return ride if ride["status"] == status else None

        return await eventually(check, f"ride {ride_id} to be {status}", timeout)

    def query(self, fn: Callable[[Session], T]) -> T:
        with self.rt.db.reading() as session:
            return fn(session)


async def check_problem(response: httpx.Response) -> None:
    """Every problem answer any test receives has the RFC 9457 shape."""
    content_type = response.headers.get("content-type", "")
    if content_type.startswith(PROBLEM_JSON):
        await response.aread()
        errors = problem_shape_errors(response.status_code, content_type, response.content)
        assert not errors, f"{response.request.method} {response.request.url}: {errors}"


@contextlib.asynccontextmanager
async def running_stack(settings: Settings, temporal: Client | None = None,
                        components: tuple[str, ...] = ("worker", "consumers", "relay", "api"),
                        reset: bool = True) -> AsyncIterator[Stack]:
    if reset:
        await reset_streams(settings)
    stop = asyncio.Event()
    async with runtime(settings, "test") as rt:
        if temporal is not None:
            rt.temporal = temporal
        runners = {"worker": run_temporal_worker, "consumers": run_consumers,
                   "relay": run_relay, "api": run_api}
        tasks = [asyncio.create_task(runners[name](rt, stop), name=name) for name in components]
        base = f"http://{settings.api_host}:{settings.api_port}"
        async with httpx.AsyncClient(base_url=base, timeout=20,
                                     event_hooks={"response": [check_problem]}) as http:
            stack = Stack(settings, rt, http, tasks)
            try:
                if "api" in components:
                    async def serving() -> bool:
                        for t in tasks:
                            if t.done():
                                t.result()
                        return answering(settings.api_host, settings.api_port)

                    await eventually(serving, "the API to listen")
                yield stack
            finally:
                stop.set()
                results = await asyncio.gather(*tasks, return_exceptions=True)
                with contextlib.suppress(Exception):
                    await terminate_running(stack.temporal)
                failures = [r for r in results if isinstance(r, BaseException)]
                if failures:
                    raise failures[0]


@contextlib.asynccontextmanager
async def consumers_running(stack: Stack, names: tuple[str, ...] = CONSUMERS
                            ) -> AsyncIterator[None]:
    """Run these consumers for the block (for a stack started without "consumers"), so a
    test can hold one back — the workflow-trigger, say — and let it go later."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_consumers(stack.rt, stop, names), name="consumers")
    try:
        yield
    finally:
        stop.set()
        await task
