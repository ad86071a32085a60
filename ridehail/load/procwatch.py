"""What the processes of a running stack cost while the bench runs: CPU seconds and
peak resident memory, read from the operating system (psutil) for the processes found
listening on the stack's ports; and what machine it ran on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from infra.config import Settings


@dataclass
class ProcessUsage:
    role: str
    pid: int
    name: str
    cpu_s: float  # user + system CPU seconds during the measured window
    peak_rss_mb: float  # highest resident memory sampled during the window
    hwm_rss_mb: float | None  # the process's lifetime peak (VmHWM), Linux only


def listening_pid(port: int) -> int | None:
    """The process listening on this TCP port on this machine, if it can be seen."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            return int(c.pid)
    return None


def _hwm_mb(pid: int) -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


class ProcessWatch:
    """CPU seconds and peak RSS of some processes over a window (RSS sampled)."""

    SAMPLE_S = 0.25

    def __init__(self, roles: dict[str, int]) -> None:
        self.procs: dict[str, psutil.Process] = {}
        for role, pid in roles.items():
            with contextlib.suppress(psutil.Error):
                self.procs[role] = psutil.Process(pid)
        self._cpu0: dict[str, float] = {}
        self._peak: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def _cpu(self, p: psutil.Process) -> float:
        t = p.cpu_times()
        return float(t.user + t.system)

    def _sample(self) -> None:
        for role, p in self.procs.items():
            with contextlib.suppress(psutil.Error):
                self._peak[role] = max(self._peak.get(role, 0), p.memory_info().rss)

    async def _sampler(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(self.SAMPLE_S)

    def start(self) -> None:
        for role, p in self.procs.items():
            with contextlib.suppress(psutil.Error):
                self._cpu0[role] = self._cpu(p)
        self._task = asyncio.create_task(self._sampler())

    async def stop(self) -> list[ProcessUsage]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._sample()
        out = []
        for role, p in self.procs.items():
            with contextlib.suppress(psutil.Error):
                out.append(ProcessUsage(
                    role=role, pid=p.pid, name=" ".join(p.cmdline()[:3])[:80],
                    cpu_s=self._cpu(p) - self._cpu0.get(role, 0.0),
                    peak_rss_mb=self._peak.get(role, 0) / 2**20, hwm_rss_mb=_hwm_mb(p.pid)))
        return out


def stack_processes(settings: Settings) -> dict[str, int]:
    """The processes of the stack, found by the ports they listen on."""
    roles: dict[str, int] = {}
    ports = {"api": settings.api_port, "temporal": settings.temporal_host_port[1],
             "nats": settings.nats_host_port[1]}
    for role, port in ports.items():
        pid = listening_pid(port)
        if pid is not None:
            roles[role] = pid
    worker = _worker_child(roles["api"]) if "api" in roles else None
    if worker is not None:
        roles["worker"] = worker
    roles["bench"] = os.getpid()
    return roles


def _worker_child(api_pid: int) -> int | None:
    """The worker process ``ridehail dev`` runs beside its own (ridehail.processes.devstack)."""
    from ridehail.processes.devstack import runs_component

    try:
        for child in psutil.Process(api_pid).children():
            if runs_component(child.cmdline(), "worker"):
                return child.pid
    except psutil.Error:
        pass
    return None


def describe_role(role: str, roles: dict[str, int]) -> str:
    if role == "api":
        if roles.get("api") == os.getpid():
            return "API + worker + consumers + relay + this bench client (one process)"
        if "worker" in roles:
            return "API + consumers + relay (the `ridehail dev` process)"
        return "API + worker + consumers + relay (one process)"
    return {"worker": "the Temporal worker (a child process of `ridehail dev`)",
            "temporal": "Temporal server", "nats": "nats-server",
            "bench": "this bench process (clients; the anchor's worker)"}.get(role, role)


def machine_info() -> dict[str, Any]:
    model = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": psutil.cpu_count(), "cpu_model": model,
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform()}
