"""Markers by folder (unit, integration, e2e), and fixtures: real Temporal and NATS
servers for the session, a fresh database per test (SQLite, or PostgreSQL when
RIDEHAIL_TEST_POSTGRES_URL is set), the whole stack running in-process, the API alone,
and a time-skipping Temporal environment for timer-heavy workflow tests."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from infra.config import Settings
from infra.connections import connect_temporal
from ridehail.processes.devservers import SEARCH_ATTRIBUTES
from ridehail.processes.serverprocess import ServerProcess, binary
from tests.support.servers import (
    RestartableNats,
    free_port,
    server_settings,
    start_nats,
    start_temporal,
)
from tests.support.stack import Stack, running_stack

POSTGRES_URL = os.environ.get("RIDEHAIL_TEST_POSTGRES_URL")
LAYERS = ("unit", "integration", "e2e")  # the folders, and the markers they apply


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its folder's layer, so ``-m unit`` (or ``integration``,
    ``e2e``) selects it."""
    for item in items:
        folder = item.path.parent.name
        if folder in LAYERS:
            item.add_marker(getattr(pytest.mark, folder))


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """nats-server -js and temporal server start-dev, started once for the session."""
    settings = server_settings(tmp_path_factory.mktemp("servers"))
    started: list[ServerProcess] = []
    try:
        for start in (start_nats, start_temporal):
            started.append(start(settings))

        async def ready() -> None:
            await asyncio.gather(*(s.wait_ready() for s in started))

        asyncio.run(ready())
        yield settings
    finally:
        for server in reversed(started):
            server.stop()


@contextmanager
def _postgres_schema(url: str) -> Iterator[str]:
    """A schema of its own for one test, so tests never see each other's rows."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


# Every database test runs on SQLite, and on PostgreSQL too where CI provides one.
DATABASES = ["sqlite", "postgresql"] if POSTGRES_URL else ["sqlite"]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh SQLite file in the test's directory, or a fresh PostgreSQL schema."""
    if request.param == "postgresql":
        assert POSTGRES_URL
        with _postgres_schema(POSTGRES_URL) as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path / 'ridehail.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL schema, for tests of what only PostgreSQL does (skipped without
    RIDEHAIL_TEST_POSTGRES_URL)."""
    if not POSTGRES_URL:
        pytest.skip("RIDEHAIL_TEST_POSTGRES_URL is not set")
    with _postgres_schema(POSTGRES_URL) as url:
        yield url


@pytest.fixture
def settings(servers: Settings, tmp_path: Path, database_url: str) -> Settings:
    return servers.model_copy(update={
        "data_dir": tmp_path,
        "database_url": database_url,
        "api_port": free_port(),
        # an offer answered through API → outbox → NATS → trigger must not expire on a
        # loaded machine (timer paths run on the time-skipping server, not in real time)
        "offer_timeout_s": 20,
        "matching_deadline_s": 60,
        "free_cancel_s": 120,
    })


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with running_stack(settings) as s:
        yield s


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Stack]:
    """The API alone (no worker or consumers): for tests of the HTTP layer's own rules,
    with rides set up in the database as the saga would leave them."""
    async with running_stack(settings, components=("api",)) as stack:
        yield stack


@pytest.fixture
async def own_nats(tmp_path: Path) -> AsyncIterator[RestartableNats]:
    """A nats-server for this test alone, which it may stop and restart."""
    server = RestartableNats(tmp_path / "own-nats")
    server.start()
    try:
        await server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
async def temporal_client(servers: Settings) -> Client:
    return await connect_temporal(servers)


@pytest.fixture
async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping Temporal test server: function-scoped so each test skips its own
    time, with the ride search attributes added (it knows none by default)."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    try:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    n: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for n in SEARCH_ATTRIBUTES
                },
            )
        )
        yield env
    finally:
        await env.shutdown()
