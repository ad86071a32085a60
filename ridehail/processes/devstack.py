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
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from infra.config import DEV_ADDRESSES, DEV_FILE, Settings
from ridehail.processes.devservers import DevStack
from ridehail.processes.serverprocess import (
    STARTUP_TIMEOUT_S,
    DevStackError,
    answering,
    die_with_parent,
)

log = logging.getLogger(__name__)

# A child component gets this long to finish its work after SIGTERM (the worker's own
# graceful shutdown is 10 s), then it is killed.
CHILD_STOP_TIMEOUT_S = 20.0
# A component process or server that dies is restarted after 1, 2, 4 … up to this many
# seconds; one that then ran this long starts the count again.
RESTART_MAX_DELAY_S = 30.0
RESTART_RESET_S = 60.0


def ridehail_command(*args: str) -> list[str]:
    """The ``ridehail`` command with ``args``, run by this interpreter (``python -m
    ridehail``): how a parent process starts a child of it, wherever it is installed."""
    return [sys.executable, "-m", "ridehail", *args]


def component_command(name: str) -> list[str]:
    """How ``ridehail dev`` starts a component in a child process."""
    return ridehail_command(name)


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
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
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


def install_stop_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def run_dev(settings: Settings, say: Callable[[str], None], verbose: bool = False) -> None:
    from ridehail.processes.components import (
        metrics_served,
        observe,
        run_api,
        run_consumers,
        run_logged,
        run_relay,
        runtime,
    )

    if answering(settings.api_host, settings.api_port):
        # (else "ready" would be said of whatever answers there, and the API fail after)
        raise DevStackError(
            f"something already answers on {settings.api_url} (another ridehail dev?): "
            "stop it, or give this one another port (--api-port or RIDEHAIL_API_PORT)")
    stop = asyncio.Event()
    install_stop_handlers(stop)
    stack = DevStack(settings, say)
    await stack.start_servers()
    settings = _with_metrics_ports(stack.settings)  # pointing at the servers it chose
    observe(settings, "dev")
    try:
        async with runtime(settings, "dev") as rt, metrics_served(rt, "dev") as metrics_url:
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
                _say_ready(settings, say, stack.notes, metrics_url)
                _write_dev_file(settings)
            failed = await _supervise(tasks, stop)
            if failed:
                raise DevStackError(failed)
    finally:
        _remove_dev_file(settings)
        say("stopping …")
        stack.stop_servers()
        say("stopped")


def _write_dev_file(settings: Settings) -> None:
    """Tell the other ``ridehail`` commands run on this data dir which servers this stack
    uses (``Settings.running_dev``)."""
    running = {"pid": os.getpid(), **{k: getattr(settings, k) for k in DEV_ADDRESSES}}
    (settings.data_dir / DEV_FILE).write_text(json.dumps(running, indent=2) + "\n")


def _remove_dev_file(settings: Settings) -> None:
    """Remove ``dev.json`` if this process wrote it (a file left by a stack that was
    killed stays until the next one writes its own)."""
    path = settings.data_dir / DEV_FILE
    try:
        mine = json.loads(path.read_text()).get("pid") == os.getpid()
    except (OSError, ValueError, AttributeError):
        return
    if mine:
        path.unlink(missing_ok=True)


def _with_metrics_ports(settings: Settings) -> Settings:
    """Metrics on for the worker and this process: on free ports unless set. The worker's
    is chosen here, so the banner can say it before the child listens."""
    from ridehail.processes.processmetrics import free_port

    update: dict[str, int] = {}
    if not settings.worker_metrics_port:
        update["worker_metrics_port"] = free_port(settings.metrics_host)
    if settings.consumers_metrics_port is None:
        update["consumers_metrics_port"] = 0
    return settings.model_copy(update=update)


def _say_ready(settings: Settings, say: Callable[[str], None], notes: list[str],
               metrics_url: str | None = None) -> None:
    say(f"API        {settings.api_url}")
    say(f"API docs   {settings.api_url}/docs")
    say(f"Temporal   {settings.temporal_ui_url}  (workflow history, UI)")
    say(f"metrics    api {settings.api_url}/metrics · worker http://{settings.metrics_host}:"
        f"{settings.worker_metrics_port}/metrics"
        + (f" · consumers and relay {metrics_url}" if metrics_url else ""))
    for note in notes:
        say(note)
    say(f"area       rides {settings.area.describe()}, at most {settings.max_trip_km:g} km "
        "(RIDEHAIL_SERVICE_AREA, RIDEHAIL_MAX_TRIP_KM)")
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

