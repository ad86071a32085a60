"""The servers ``ridehail dev`` runs or reuses: the Temporal dev server (UI on, state in
``<data dir>/temporal.db``, the ride search attributes registered) and nats-server with
JetStream (store in ``<data dir>/nats``).

A server already answering at its address is reused only if it fits ridehail (the
fit-checks of ``events.fitcheck`` and ``ridehail.processes.temporalcheck``); otherwise one of
ridehail's own is started, on a free port when the default one is taken. While the
stack runs, a server it started that dies is started again on its data.

Starting, waiting for and stopping a server binary is ``ridehail.processes.serverprocess``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path

from temporalio.client import Client

from events.fitcheck import FitReport, fit_check
from infra.config import Settings
from ridehail.processes.serverprocess import (
    STARTUP_TIMEOUT_S,
    DevStackError,
    ServerProcess,
    answering,
    binary,
    free_port,
)
from ridehail.processes.temporalcheck import SEARCH_ATTRIBUTES, TemporalUnfit, prepare_temporal

# A server that dies is started again within this long (and retried if it fails).
RESTART_MAX_DELAY_S = 30.0
# How often ridehail dev looks at the servers it runs or reuses.
WATCH_INTERVAL_S = 1.0

__all__ = [
    "SEARCH_ATTRIBUTES",
    "DevStack",
    "connect_temporal_when_up",
    "nats_server",
    "own_nats_port",
    "temporal_server",
]


# Where ridehail dev notes the port it chose for a nats-server of its own, to take it
# again on the next start when it is free.
NATS_PORT_FILE = "nats.port"


def own_nats_port(data_dir: Path, host: str) -> int:
    """The port for a nats-server of ridehail dev's own on this data dir: the one it had
    last time if that is free (tools pointed at it keep working across restarts), else a
    new free one; noted in the data dir either way."""
    path = data_dir / NATS_PORT_FILE
    try:
        port = int(path.read_text().strip())
        with socket.socket() as s:
            # as nats-server binds: a port its last run left in TIME_WAIT is free
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except (OSError, ValueError, OverflowError):
        port = free_port(host)
        path.write_text(f"{port}\n")
    return port


# Workflows whose state the dev server keeps in memory (its own default is 8,192: about
# 4,000 rides, some 300 MB more than this); a ride in flight takes two entries.
TEMPORAL_CACHED_WORKFLOWS = 1024


def temporal_server(settings: Settings) -> ServerProcess:
    host, port = settings.temporal_host_port
    data = settings.data_dir
    argv = [
        binary("temporal"), "server", "start-dev",
        "--ip", host, "--port", str(port),
        "--ui-port", str(settings.temporal_ui_port),
        "--db-filename", str(data / "temporal.db"),
        # a write-ahead log: one fsync per commit instead of a rollback journal's several
        # (as durable; a quarter less of the server's CPU per ride, and far less waiting)
        "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=full",
        "--namespace", settings.temporal_namespace,
        "--ui-disable-news-fetch",
        "--log-level", "warn",
        # The server keeps the state of recent workflows in memory, open and closed; a
        # bound of its own keeps its memory level once that many rides have run
        # (docs/BENCHMARKS.md, Soak), far above the rides a dev stack has in flight.
        "--dynamic-config-value",
        f"history.hostLevelCacheMaxSize={TEMPORAL_CACHED_WORKFLOWS}",
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
    from infra.connections import connect_temporal

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
    fit-checks of ``events.fitcheck`` and ``ridehail.processes.temporalcheck``). One that does not
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
            if any(s.name == "nats-server" for s in self.started):
                await shorten_own_streams(self.settings, self.say)
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
        port = own_nats_port(self.settings.data_dir, server.host)
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
                         **settings.nats_connect_options())
    except Exception as e:  # noqa: BLE001 — whatever answers there is no usable NATS
        report = FitReport(servers=settings.nats_url)
        report.findings.append(Finding("server", "protocol", f"not NATS ({e!r})", "NATS",
                                       "point RIDEHAIL_NATS_URL at a nats-server"))
        return report
    try:
        return await fit_check(nc, nc.jetstream(), replicas=settings.stream_replicas,
                               keep_s=settings.stream_keep_s,
                               notification_keep_s=settings.notification_keep_s, repair=True)
    finally:
        await nc.close()


async def shorten_own_streams(settings: Settings, say: Callable[[str], None]) -> None:
    """On a nats-server ``ridehail dev`` started on its data dir, whose consumers are its
    own, do what ``ridehail streams migrate`` does for a shorter RIDEHAIL_STREAM_KEEP_S or
    RIDEHAIL_NOTIFICATION_KEEP_S (a store from before the limit keeps everything): shorten
    the streams' age limit where every durable has acknowledged what that deletes. A
    durable behind stops the start, saying what keeps its events until it catches up."""
    from nats.aio.client import Client as NATS

    from events.stream_age import keeping_settings, said_settings, shorten_ages
    from events.streams import stream_configs

    keep_s, notification_keep_s = settings.stream_keep_s, settings.notification_keep_s
    nc = NATS()
    await nc.connect(servers=settings.nats_servers, connect_timeout=3, allow_reconnect=False,
                     **settings.nats_connect_options())
    try:
        js = nc.jetstream()
        report = await fit_check(nc, js, replicas=settings.stream_replicas, keep_s=keep_s,
                                 notification_keep_s=notification_keep_s, repair=True)
        _, behind = await shorten_ages(
            js, report, stream_configs(settings.stream_replicas, keep_s,
                                       notification_keep_s=notification_keep_s),
            wait_s=0, say=say)
    finally:
        await nc.close()
    if behind:
        raise DevStackError(
            f"the streams keep events longer than {' and '.join(keeping_settings(behind))}, "
            "and shortening that would delete events a durable has not read: "
            f"{'; '.join(map(str, behind))}. Start ridehail dev once with "
            f"{said_settings(behind)} (it keeps them) until its consumers catch up, then "
            "with the value you want.")


async def probe_temporal(settings: Settings) -> str | None:
    """Why the Temporal server at the settings' address does not fit, or None if it does
    (its namespace and search attributes registered where missing)."""
    from infra.connections import connect_temporal

    try:
        client = await asyncio.wait_for(connect_temporal(settings), 10)
        await prepare_temporal(client, settings.temporal_namespace, settings.temporal_address,
                               register_namespace=True)
    except TemporalUnfit as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 — whatever answers there is no usable Temporal
        return f"no Temporal frontend answers there ({type(e).__name__}: {e})"
    return None


