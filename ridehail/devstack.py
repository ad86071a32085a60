"""``ridehail dev``: the whole stack on one machine.

Starts the Temporal dev server (UI on, state in ``<data dir>/temporal.db``, the ride
search attributes registered) and nats-server with JetStream (store in
``<data dir>/nats``) unless one already answers at its configured address, then runs the
components as production does, in processes of their own: the Temporal worker as a
``ridehail worker`` child process (its output forwarded, prefixed ``worker |``), and the
API, the consumers and the outbox relay in this one. Two Python processes, because one
has a single interpreter lock: the worker's workflow tasks and activities and the API's
requests would otherwise queue for the same core while the machine has more.

On Ctrl-C or SIGTERM it stops its own components and the worker first, then the
servers it started, and waits for them, so nothing is left running; if it is killed,
Linux stops its children (``PR_SET_PDEATHSIG``). Run it again and it resumes with the
same data.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client

from events.fitcheck import FitReport, fit_check
from ridehail.config import Settings
from ridehail.temporalcheck import SEARCH_ATTRIBUTES, TemporalUnfit, prepare_temporal

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 60.0
# A child component gets this long to finish its work after SIGTERM (the worker's own
# graceful shutdown is 10 s), then it is killed.
CHILD_STOP_TIMEOUT_S = 20.0
# A component process or server that dies is restarted after 1, 2, 4 … up to this many
# seconds; one that then ran this long starts the count again.
RESTART_MAX_DELAY_S = 30.0
RESTART_RESET_S = 60.0
# How often ridehail dev looks at the servers it runs or reuses.
WATCH_INTERVAL_S = 1.0


class DevStackError(RuntimeError):
    pass


def binary(name: str) -> str:
    """A server binary installed by the dev extra (beside this Python, or on PATH)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise DevStackError(
        f"`{name}` is not installed; install the project with its dev extra: "
        'pip install -e ".[dev]"'
    )


def answering(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover — runs in the child before exec
    """Ask Linux to SIGTERM the child if ridehail dev itself is killed."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class ServerProcess:
    name: str
    argv: list[str]
    log_path: Path
    host: str
    port: int
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us; we stop the servers in order
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        out.close()

    async def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise DevStackError(
                    f"{self.name} exited with code {self.proc.returncode}; see {self.log_path}:\n"
                    + _tail(self.log_path)
                )
            if answering(self.host, self.port):
                return
            await asyncio.sleep(0.1)
        raise DevStackError(f"{self.name} did not answer on {self.host}:{self.port} "
                            f"within {timeout:.0f}s; see {self.log_path}")

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs; killing it", self.name, timeout)
            self.proc.kill()
            self.proc.wait()


def component_command(name: str) -> list[str]:
    """How ``ridehail dev`` starts a component in a child process."""
    return [sys.executable, "-m", "ridehail.cli", name]


def runs_component(cmdline: list[str], name: str) -> bool:
    """Whether a process's command line is that of a component ``ridehail dev`` started."""
    return cmdline[1:4] == component_command(name)[1:]


@dataclass
class ComponentProcess:
    """A component (``ridehail <name>``) run in a child process with these settings: its
    output is forwarded line by line, prefixed with its name; ``ready`` is set once it
    says it runs. ``run`` returns when it stopped after ``stop`` was set; a process that
    dies after it started is restarted, one that dies before raises."""

    name: str
    settings: Settings
    verbose: bool = False
    say: Callable[[str], None] = field(default=lambda line: log.warning("%s", line))
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _last: list[str] = field(default_factory=list, repr=False)

    async def run(self, stop: asyncio.Event) -> None:
        """Run the process until ``stop``; once it has started, restart it with growing
        delays whenever it dies (a component that never started raises instead)."""
        restarts = 0
        while True:
            started = time.monotonic()
            code = await self._run_once(stop)
            if code is None:
                return
            if not self.ready.is_set():
                raise DevStackError(f"the {self.name} process exited with code {code}:\n"
                                    + "\n".join(self._last))
            restarts = 1 if time.monotonic() - started > RESTART_RESET_S else restarts + 1
            delay = min(RESTART_MAX_DELAY_S, 2.0 ** (restarts - 1))
            self.say(f"the {self.name} process exited with code {code}; restarting it in "
                     f"{delay:.0f}s (restart {restarts})")
            try:
                await asyncio.wait_for(stop.wait(), delay)
                return
            except TimeoutError:
                pass

    async def _run_once(self, stop: asyncio.Event) -> int | None:
        """One run of the process: None once it stopped because ``stop`` was set, its exit
        code if it ended by itself."""
        argv = [*component_command(self.name), *(["-v"] if self.verbose else [])]
        proc = await asyncio.create_subprocess_exec(
            *argv, env={**os.environ, **self.settings.as_env()},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            limit=1 << 20,  # the longest line it may print (a traceback's repr, say)
            start_new_session=True,  # Ctrl-C reaches us; we stop it in order
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        assert proc.stdout is not None
        forwarding = asyncio.create_task(self._forward(proc.stdout))
        stopping = asyncio.create_task(stop.wait())
        exited = asyncio.create_task(proc.wait())
        try:
            await asyncio.wait({stopping, exited}, return_when=asyncio.FIRST_COMPLETED)
            if exited.done() and not stop.is_set():
                await forwarding
                return proc.returncode
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(exited), CHILD_STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning("the %s process did not stop in %.0fs; killing it", self.name,
                            CHILD_STOP_TIMEOUT_S)
            return None
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            stopping.cancel()
            await forwarding

    async def _forward(self, out: asyncio.StreamReader) -> None:
        while raw := await out.readline():  # b"" only at the end of its output
            line = raw.decode(errors="replace").rstrip()
            if not self.ready.is_set() and f"{self.name} running" in line:
                self.ready.set()
                continue
            self._last = [*self._last[-14:], line]
            if self.settings.log_format == "json" and line.startswith("{"):
                print(line, file=sys.stderr, flush=True)  # one JSON object a line, as is
            else:
                print(f"{self.name} | {line}", file=sys.stderr, flush=True)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def temporal_server(settings: Settings) -> ServerProcess:
    host, port = settings.temporal_host_port
    data = settings.data_dir
    argv = [
        binary("temporal"), "server", "start-dev",
        "--ip", host, "--port", str(port),
        "--ui-port", str(settings.temporal_ui_port),
        "--db-filename", str(data / "temporal.db"),
        "--namespace", settings.temporal_namespace,
        "--ui-disable-news-fetch",
        "--log-level", "warn",
    ]
    for name in SEARCH_ATTRIBUTES:
        argv += ["--search-attribute", f"{name}=Keyword"]
    return ServerProcess("temporal", argv, data / "logs" / "temporal.log", host, port)


def nats_server(settings: Settings) -> ServerProcess:
    host, port = settings.nats_host_port
    data = settings.data_dir
    argv = [binary("nats-server"), "-a", host, "-p", str(port), "-js", "-sd", str(data / "nats")]
    return ServerProcess("nats-server", argv, data / "logs" / "nats.log", host, port)


async def connect_temporal_when_up(settings: Settings, timeout: float = STARTUP_TIMEOUT_S
                                   ) -> Client:
    from ridehail.connections import connect_temporal

    deadline = time.monotonic() + timeout
    while True:
        try:
            return await connect_temporal(settings)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


class DevStack:
    """The embedded servers this process started (none if all were already running).

    A server already answering at its address is reused only if it fits ridehail (the
    fit-checks of ``events.fitcheck`` and ``ridehail.temporalcheck``). One that does not
    fit is refused when its address was set explicitly (``RIDEHAIL_NATS_URL``,
    ``RIDEHAIL_TEMPORAL_ADDRESS``); at the default address, ridehail starts a server of
    its own on a free port instead and says why. ``settings`` then points at it."""

    def __init__(self, settings: Settings, say: Callable[[str], None],
                 explicit: set[str] | None = None) -> None:
        self.settings = settings
        self.say = say
        # the settings the user gave (environment, flags): their addresses are kept
        self.explicit = set(settings.model_fields_set if explicit is None else explicit)
        self.started: list[ServerProcess] = []
        self.reused: list[tuple[str, str, int]] = []  # (name, host, port)
        self.notes: list[str] = []  # for the banner: which servers and why

    async def start_servers(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            await self._nats()
            await self._temporal()
            await asyncio.gather(*(s.wait_ready() for s in self.started))
            client = await connect_temporal_when_up(self.settings)
            await prepare_temporal(client, self.settings.temporal_namespace,
                                   self.settings.temporal_address, register_namespace=True)
        except TemporalUnfit as e:
            self.stop_servers()
            raise DevStackError(str(e)) from None
        except BaseException:
            self.stop_servers()
            raise

    async def _nats(self) -> None:
        server = nats_server(self.settings)
        where = f"{server.host}:{server.port}"
        if not answering(server.host, server.port):
            self._start(server)
            return
        report = await probe_nats(self.settings)
        if report.ok:
            self.say(f"reusing the nats-server {report.version} already answering on {where}")
            self.reused.append(("nats-server", server.host, server.port))
            self.notes.append(f"NATS       {self.settings.nats_url} (reused)")
            return
        if "nats_url" in self.explicit:  # the user chose it: never swap it for another
            raise DevStackError(
                f"{report.explain()}\nRIDEHAIL_NATS_URL names this server, so ridehail dev "
                "uses no other; unset it to let ridehail dev start a nats-server of its own.")
        why = "; ".join(f"{f.target}: {f.field} is {f.found}, needed {f.needed}"
                        for f in report.findings)
        port = free_port(server.host)
        self.settings = self.settings.model_copy(
            update={"nats_url": f"nats://{server.host}:{port}"})
        self.say(f"the nats-server on {where} does not fit ridehail ({why}); "
                 f"starting one of its own on {server.host}:{port}")
        self.notes.append(f"NATS       {self.settings.nats_url} (own: the one on {where} "
                          "does not fit)")
        self._start(nats_server(self.settings))

    async def _temporal(self) -> None:
        host, port = self.settings.temporal_host_port
        if not answering(host, port):
            self._start_temporal()
            return
        problem = await probe_temporal(self.settings)
        if problem is None:
            self.say(f"reusing the temporal server already answering on {host}:{port}")
            self.reused.append(("temporal server", host, port))
            return
        if "temporal_address" in self.explicit:
            raise DevStackError(
                f"{problem}\nRIDEHAIL_TEMPORAL_ADDRESS names this server, so ridehail dev "
                "uses no other; unset it to let ridehail dev start a Temporal server of its "
                "own.")
        new_port = free_port(host)
        self.settings = self.settings.model_copy(
            update={"temporal_address": f"{host}:{new_port}"})
        self.say(f"the server on {host}:{port} does not fit ridehail ({problem}); "
                 f"starting a Temporal server of its own on {host}:{new_port}")
        self.notes.append(f"Temporal   {self.settings.temporal_address} (own: the one on "
                          f"{host}:{port} does not fit)")
        self._start_temporal()

    def _start_temporal(self) -> None:
        if answering(self.settings.temporal_host_port[0], self.settings.temporal_ui_port):
            if "temporal_ui_port" in self.explicit:
                raise DevStackError(f"the Temporal UI port {self.settings.temporal_ui_port} "
                                    "is taken; set RIDEHAIL_TEMPORAL_UI_PORT to a free one")
            self.settings = self.settings.model_copy(update={"temporal_ui_port": free_port()})
        self._start(temporal_server(self.settings))

    def _start(self, server: ServerProcess) -> None:
        server.start()
        self.started.append(server)

    async def watch(self, stop: asyncio.Event) -> None:
        """Until ``stop``: a server this process started that dies is restarted on its
        data (rides in flight resume); a reused one that stops answering is reported, and
        again when it is back."""
        down: set[str] = set()
        while True:
            try:
                await asyncio.wait_for(stop.wait(), WATCH_INTERVAL_S)
                return
            except TimeoutError:
                pass
            for server in self.started:
                if server.proc is None or server.proc.poll() is None:
                    continue
                self.say(f"{server.name} exited with code {server.proc.returncode}; "
                         f"restarting it on its data (log: {server.log_path})")
                server.start()
                try:
                    await server.wait_ready(timeout=RESTART_MAX_DELAY_S)
                except DevStackError as e:
                    self.say(f"{server.name} could not be restarted yet: {e}")
                else:
                    self.say(f"{server.name} is back on {server.host}:{server.port}")
            for name, host, port in self.reused:
                up = await asyncio.to_thread(answering, host, port)
                if not up and name not in down:
                    down.add(name)
                    self.say(f"the {name} on {host}:{port} stopped answering; rides wait "
                             "for it (ridehail dev did not start it, so it cannot restart it)")
                elif up and name in down:
                    down.discard(name)
                    self.say(f"the {name} on {host}:{port} answers again")

    def stop_servers(self) -> None:
        # Temporal first (it holds no NATS state), then NATS; each waits for its exit.
        for server in reversed(self.started):
            server.stop()
        self.started.clear()


async def probe_nats(settings: Settings) -> FitReport:
    """The fit-check of the NATS server at the settings' address, with repair (what every
    component does at start), as a report; a server that does not speak NATS fails it."""
    from nats.aio.client import Client as NATS

    from events.fitcheck import Finding

    nc = NATS()
    try:
        await nc.connect(servers=settings.nats_servers, connect_timeout=3,
                         allow_reconnect=False, max_reconnect_attempts=0,
                         **settings.nats_connect_options())  # type: ignore[arg-type]
    except Exception as e:  # noqa: BLE001 — whatever answers there is no usable NATS
        report = FitReport(servers=settings.nats_url)
        report.findings.append(Finding("server", "protocol", f"not NATS ({e!r})", "NATS",
                                       "point RIDEHAIL_NATS_URL at a nats-server"))
        return report
    try:
        return await fit_check(nc, nc.jetstream(), replicas=settings.stream_replicas,
                               repair=True)
    finally:
        await nc.close()


async def probe_temporal(settings: Settings) -> str | None:
    """Why the Temporal server at the settings' address does not fit, or None if it does
    (its namespace and search attributes registered where missing)."""
    from ridehail.connections import connect_temporal

    try:
        client = await asyncio.wait_for(connect_temporal(settings), 10)
        await prepare_temporal(client, settings.temporal_namespace, settings.temporal_address,
                               register_namespace=True)
    except TemporalUnfit as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 — whatever answers there is no usable Temporal
        return f"no Temporal frontend answers there ({type(e).__name__}: {e})"
    return None


def install_stop_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def run_dev(settings: Settings, say: Callable[[str], None], verbose: bool = False) -> None:
    from ridehail.components import run_api, run_consumers, run_logged, run_relay, runtime

    stop = asyncio.Event()
    install_stop_handlers(stop)
    stack = DevStack(settings, say)
    await stack.start_servers()
    settings = stack.settings  # pointing at the servers it chose
    try:
        async with runtime(settings, "dev") as rt:
            # the worker first: once the API answers, a ride requested goes all the way
            worker = ComponentProcess("worker", settings, verbose, say)
            tasks = [asyncio.create_task(worker.run(stop), name="worker")]
            await _wait_until(lambda: worker.ready.is_set() or stop.is_set(), tasks,
                              "the worker process did not start")
            components = {
                "servers": lambda: stack.watch(stop),
                "consumers": lambda: run_consumers(rt, stop),
                "relay": lambda: run_relay(rt, stop),
                "api": lambda: run_api(rt, stop),
            }
            tasks += [asyncio.create_task(run_logged(n, c, stop), name=n)
                      for n, c in components.items()]
            await _wait_until(
                lambda: stop.is_set() or answering(settings.api_host, settings.api_port),
                tasks, f"the API did not start on {settings.api_url}")
            if not stop.is_set():  # (Ctrl-C during start-up: straight to stopping)
                _say_ready(settings, say, stack.notes)
            failed = await _supervise(tasks, stop)
            if failed:
                raise DevStackError(failed)
    finally:
        say("stopping …")
        stack.stop_servers()
        say("stopped")


def _say_ready(settings: Settings, say: Callable[[str], None], notes: list[str]) -> None:
    say(f"API        {settings.api_url}")
    say(f"API docs   {settings.api_url}/docs")
    say(f"Temporal   {settings.temporal_ui_url}  (workflow history, UI)")
    for note in notes:
        say(note)
    say(f"data       {settings.data_dir.resolve()}")
    # ridehail token finds the secret in the data dir itself; named absolutely, the line
    # works from any folder
    say(f"tokens     RIDEHAIL_DATA_DIR={settings.data_dir.resolve()} "
        "ridehail token --role rider --sub alice")
    say("ready — Ctrl-C to stop")


async def _wait_until(ready: Callable[[], bool], tasks: list[asyncio.Task[None]],
                      late: str) -> None:
    """Wait for ``ready`` while the components start; a component that ends meanwhile
    raises its error."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not ready():
        for t in tasks:
            if t.done():  # (a component that stopped because of Ctrl-C has made ready true)
                t.result()  # surfaces the component's error
                raise DevStackError(f"{t.get_name()} stopped during start-up")
        if time.monotonic() > deadline:
            raise DevStackError(late)
        await asyncio.sleep(0.05)


async def _supervise(tasks: list[asyncio.Task[None]], stop: asyncio.Event) -> str | None:
    """Wait for Ctrl-C; if a component dies first, stop the rest and report it."""
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({stopping, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    # A component that returns once Ctrl-C was pressed is stopping as asked (it can
    # finish before the waiter on the event is scheduled); otherwise it died.
    asked_to_stop = stop.is_set()
    failure = None
    for t in done:
        if t is stopping:
            continue
        exc = t.exception()
        if exc is None and asked_to_stop:
            continue
        failure = f"{t.get_name()} stopped unexpectedly: {exc!r}"
        log.error(failure)
    stop.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for t, r in zip(tasks, results, strict=True):
        if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
            log.error("%s failed while stopping: %r", t.get_name(), r)
    stopping.cancel()
    return failure

