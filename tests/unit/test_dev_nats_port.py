"""``ridehail dev``'s own nats-server keeps its port across restarts of the same data dir
when that port is free, and takes a new free one when it is not."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.config import Settings
from ridehail.processes.devservers import NATS_PORT_FILE, DevStack, own_nats_port
from ridehail.processes.serverprocess import ServerProcess


def test_the_port_of_last_time_is_taken_again_when_free(tmp_path: Path) -> None:
    first = own_nats_port(tmp_path, "127.0.0.1")
    assert (tmp_path / NATS_PORT_FILE).read_text().strip() == str(first)
    assert own_nats_port(tmp_path, "127.0.0.1") == first


def test_a_new_free_port_when_that_one_is_taken(tmp_path: Path) -> None:
    first = own_nats_port(tmp_path, "127.0.0.1")
    with socket.create_server(("127.0.0.1", first)):
        second = own_nats_port(tmp_path, "127.0.0.1")
    assert second != first
    assert (tmp_path / NATS_PORT_FILE).read_text().strip() == str(second)


@pytest.fixture
def not_nats() -> Iterator[int]:
    """A port where something that does not speak NATS answers (and hangs up)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield port
    server.close()


def test_dev_starts_its_own_nats_server_again_on_the_port_it_had(
    tmp_path: Path, not_nats: int
) -> None:
    """At the default address something unfit answers: each start of dev on the data dir
    chooses the port its own nats-server had the time before."""
    settings = Settings(data_dir=tmp_path, nats_url=f"nats://127.0.0.1:{not_nats}")

    def start() -> int:
        stack = DevStack(settings, lambda line: None, explicit=set())
        started: list[ServerProcess] = []
        stack._start = started.append  # type: ignore[method-assign]  # no process
        asyncio.run(stack._nats())
        assert [s.name for s in started] == ["nats-server"]
        return started[0].port

    first = start()
    assert first != not_nats
    assert start() == first
    # taken meanwhile: a new free port
    with socket.create_server(("127.0.0.1", first)):
        assert start() not in (first, not_nats)
