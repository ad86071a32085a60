"""The production shape on one machine, for the chaos suite: a PostgreSQL of its own
(``initdb`` and ``pg_ctl`` in a temporary directory, on a free port — never the machine's
shared server), a Temporal server on a persisted SQLite file, nats-server (one node, or a
three-node JetStream cluster with replicated streams), and ``ridehail api``, ``worker``,
``consumers`` and ``relay`` as separate processes. Every process is this suite's own,
so it may kill, freeze and restart any of them by PID."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from infra.config import Settings
from ridehail.processes.devservers import temporal_server
from ridehail.processes.devstack import ridehail_command
from ridehail.processes.serverprocess import ServerProcess, answering, binary, free_port, terminate

COMPONENTS = ("api", "worker", "consumers", "relay")
READY_TIMEOUT_S = 90.0


class ShapeError(RuntimeError):
    pass


def _postgres_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if found:
        return str(found[-1])
    exe = shutil.which(name)
    if exe:
        return exe
    raise ShapeError(f"`{name}` is not installed (Debian: apt-get install postgresql)")


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


@dataclass
class Postgres:
    """A PostgreSQL cluster of the suite's own, trust auth on loopback."""

    root: Path
    port: int = field(default_factory=free_port)

    @property
    def data(self) -> Path:
        return self.root / "pgdata"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self._run([_postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres",
                   "-A", "trust", "--no-sync"])

    def start(self) -> None:
        self._run([_postgres_bin("pg_ctl"), "-D", str(self.data), "-l",
                   str(self.root / "postgres.log"), "-w", "-t", "60", "-o",
                   f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=on -c max_connections=200", "start"])

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run([_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                       "stop"], check=False)

    def restart(self) -> None:
        """Stopped at once (``-m immediate``: as a crash leaves it), then started again."""
        self.stop("immediate")
        self.start()

    def _run(self, argv: list[str], check: bool = True) -> None:
        done = subprocess.run(_as_postgres(argv), capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise ShapeError(f"{' '.join(argv[:2])} failed: {done.stderr or done.stdout}")


def nats_node(root: Path, name: str, port: int, cluster_port: int | None = None,
              routes: list[int] | None = None) -> ServerProcess:
    argv = [binary("nats-server"), "-a", "127.0.0.1", "-p", str(port), "-js",
            "-sd", str(root / name), "-n", name]
    if cluster_port is not None:
        argv += ["--cluster_name", "ridehail-chaos",
                 "--cluster", f"nats://127.0.0.1:{cluster_port}",
                 "--routes", ",".join(f"nats://127.0.0.1:{p}" for p in routes or [])]
    return ServerProcess(name, argv, root / "logs" / f"{name}.log", "127.0.0.1", port)


@dataclass
class Component:
    """``ridehail <name>`` in a process of its own, its output in a log file."""

    name: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            out.write(f"--- starting {self.name} at {time.strftime('%X')}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                ridehail_command(self.name), env=self.env,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)

    async def wait_running(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        marker = f"{self.name} running"
        while marker not in self._since_last_start():
            if self.proc is None or self.proc.poll() is not None:
                raise ShapeError(f"ridehail {self.name} exited:\n{self._since_last_start()}")
            if time.monotonic() > deadline:
                raise ShapeError(f"ridehail {self.name} did not start; see {self.log_path}")
            await asyncio.sleep(0.2)

    def _since_last_start(self) -> str:
        text = self.log_path.read_text(errors="replace")
        return text[text.rfind("--- starting"):]

    def stop(self, timeout: float = 30) -> None:
        terminate(self.proc, f"ridehail {self.name}", timeout)


class Shape:
    """Everything the suite runs. ``cluster``: three NATS nodes, streams at R3."""

    def __init__(self, root: Path, *, cluster: bool = False, offer_timeout_s: float = 4,
                 matching_deadline_s: float = 90, free_cancel_s: float = 4) -> None:
        self.root = root
        self.postgres = Postgres(root / "postgres")
        nodes = 3 if cluster else 1
        ports = [free_port() for _ in range(nodes)]
        cluster_ports = [free_port() for _ in range(nodes)] if cluster else []
        self.nats = [
            nats_node(root / "nats", f"nats-{i}", ports[i],
                      cluster_ports[i] if cluster else None,
                      [p for j, p in enumerate(cluster_ports) if j != i])
            for i in range(nodes)
        ]
        self.settings = Settings(
            data_dir=root / "data", database_url=self.postgres.url,
            nats_url=",".join(f"nats://127.0.0.1:{p}" for p in ports),
            temporal_address=f"127.0.0.1:{free_port()}", temporal_ui_port=free_port(),
            api_port=free_port(), jwt_secret="chaos-" + os.urandom(16).hex(),
            offer_timeout_s=offer_timeout_s, matching_deadline_s=matching_deadline_s,
            free_cancel_s=free_cancel_s, stream_replicas=3 if cluster else 1,
        )
        self.temporal = temporal_server(self.settings)
        env = {**os.environ, **self.settings.as_env(), "PYTHONUNBUFFERED": "1"}
        self.components = {name: Component(name, env, root / "logs" / f"{name}.log")
                           for name in COMPONENTS}

    @property
    def api_url(self) -> str:
        return self.settings.api_url

    @property
    def env(self) -> dict[str, str]:
        return self.components["api"].env

    async def start(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.postgres.init)
        await asyncio.to_thread(self.postgres.start)
        for server in (*self.nats, self.temporal):
            server.start()
        await asyncio.gather(*(s.wait_ready() for s in (*self.nats, self.temporal)))
        # the worker first (it registers nothing the others need, but answers the saga)
        for name in ("worker", "consumers", "relay", "api"):
            self.components[name].start()
            await self.components[name].wait_running()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not answering(self.settings.api_host, self.settings.api_port):
            if time.monotonic() > deadline:
                raise ShapeError(f"the API did not listen on {self.api_url}")
            await asyncio.sleep(0.2)

    def server(self, name: str) -> ServerProcess:
        for s in (*self.nats, self.temporal):
            if s.name == name:
                return s
        raise KeyError(name)

    def pid_of(self, name: str) -> int:
        if name in self.components:
            proc = self.components[name].proc
        else:
            proc = self.server(name).proc
        if proc is None or proc.poll() is not None:
            raise ShapeError(f"{name} is not running")
        return proc.pid

    async def restart(self, name: str) -> None:
        if name == "postgres":
            await asyncio.to_thread(self.postgres.start)
        elif name in self.components:
            c = self.components[name]
            if c.proc is not None:
                await asyncio.to_thread(c.proc.wait)
            c.start()
            await c.wait_running()
        else:
            s = self.server(name)
            if s.proc is not None:
                await asyncio.to_thread(s.proc.wait)
            s.start()
            await s.wait_ready()

    def stop(self) -> None:
        for proc in [*(c.proc for c in self.components.values()),
                     *(s.proc for s in (self.temporal, *self.nats))]:
            if proc is not None and proc.poll() is None:  # a frozen one must thaw to stop
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
        for name in ("api", "relay", "consumers", "worker"):
            self.components[name].stop()
        for server in (self.temporal, *self.nats):
            server.stop()
        self.postgres.stop("fast")
