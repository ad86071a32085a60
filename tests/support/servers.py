"""Temporal and NATS servers for the test session, on free ports, from the installed
binaries (the same ones ``ridehail dev`` runs)."""

from __future__ import annotations

import socket
from pathlib import Path

from infra.config import Settings
from ridehail.processes.devservers import nats_server, temporal_server
from ridehail.processes.serverprocess import ServerProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        nats_url=f"nats://127.0.0.1:{free_port()}",
        temporal_address=f"127.0.0.1:{free_port()}",
        temporal_ui_port=free_port(),
        jwt_secret="test-secret-" + "x" * 20,
        # The suite drives the API hard with a few subjects; the limits themselves are
        # tested at their defaults (test_abuse.py).
        rate_limit_quotes=1_000_000,
        rate_limit_writes=1_000_000,
        rate_limit_anonymous=1_000_000,
        sse_streams_per_subject=1_000,
    )


def start_nats(settings: Settings) -> ServerProcess:
    server = nats_server(settings)
    server.start()
    return server


def start_temporal(settings: Settings) -> ServerProcess:
    """An in-memory dev server (no --db-filename), UI on, search attributes registered."""
    server = temporal_server(settings)
    argv = server.argv
    i = argv.index("--db-filename")
    del argv[i : i + 2]
    server.start()
    return server


class RestartableNats:
    """A nats-server of one test's own, which the test may stop and start again on the
    same port and store (to show nothing is lost across a broker restart)."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._settings = Settings(data_dir=data_dir, nats_url=self.url)
        self.server = nats_server(self._settings)

    def start(self) -> None:
        self.server = nats_server(self._settings)
        self.server.start()

    async def wait_ready(self) -> None:
        await self.server.wait_ready()

    def stop(self) -> None:
        self.server.stop()

    async def restart(self) -> None:
        self.stop()
        self.start()
        await self.wait_ready()
