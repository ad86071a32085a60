"""One ``ridehail dev`` per data dir.

A dev stack holds an exclusive lock on ``<data dir>/dev.lock`` for as long as it runs,
taken before it starts or writes anything else. A second ``ridehail dev`` on the same data
dir is refused at once, naming the one that runs, so it neither reuses that one's servers
nor touches its ``dev.json``. The operating system releases the lock when the process
ends, however it ends, so a killed stack leaves no lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator

from infra.config import DEV_FILE, Settings
from ridehail.processes.serverprocess import DevStackError

LOCK_FILE = "dev.lock"


@contextlib.contextmanager
def data_dir_lock(settings: Settings) -> Iterator[None]:
    """Hold the data dir's lock while the body runs; raise ``DevStackError``, having
    changed nothing, when another ``ridehail dev`` holds it. The lock file then says which
    process holds it and where its API is."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DevStackError(_held_message(settings)) from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps({"pid": os.getpid(), "api": settings.api_url}) + "\n")
                 .encode())
        yield
    finally:
        os.ftruncate(fd, 0)  # (still held: the next holder writes its own)
        os.close(fd)


def holder(settings: Settings) -> tuple[str, str]:
    """The PID and API URL of the ``ridehail dev`` holding the data dir: from the lock
    file, or else from its ``dev.json``; ``?`` where neither says."""
    data = settings.data_dir
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError, KeyError):
        held = json.loads((data / LOCK_FILE).read_text())
        return str(held["pid"]), str(held["api"])
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError, KeyError):
        running = json.loads((data / DEV_FILE).read_text())
        return str(running["pid"]), f"http://{settings.api_host}:{running['api_port']}"
    return "?", "?"


def _held_message(settings: Settings) -> str:
    pid, api = holder(settings)
    where = settings.data_dir.resolve()
    return (f"another ridehail dev (PID {pid}, API {api}) runs on the data dir {where}; "
            "stop it, or give this one another data dir (--data-dir or RIDEHAIL_DATA_DIR)")
