"""A server binary as a child process: finding it (``binary``), starting it with its
output in a log file, waiting until it answers on its port, and stopping it
(``ServerProcess``, ``terminate``); whether an address answers (``answering``) and a free
port to give one (``free_port``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 60.0

__all__ = [
    "STARTUP_TIMEOUT_S",
    "DevStackError",
    "ServerProcess",
    "answering",
    "binary",
    "die_with_parent",
    "free_port",
    "terminate",
]


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


def die_with_parent() -> None:  # pragma: no cover — runs in the child before exec
    """Ask Linux to SIGTERM the child if ridehail dev itself is killed."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def terminate(proc: subprocess.Popen[bytes] | None, name: str, timeout: float) -> None:
    """SIGTERM a child that still runs, wait for it, and kill it after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop in %.0fs; killing it", name, timeout)
        proc.kill()
        proc.wait()


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
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
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
        terminate(self.proc, self.name, timeout)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
