"""``ridehail dev`` run as a user runs it, for the end-to-end tests: the process tree, and
one ride driven through its HTTP API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from api.auth import issue_token
from tests.support.servers import free_port

RIDEHAIL = str(Path(sys.executable).parent / "ridehail")


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = map(int, line.split())
        children.setdefault(pp, []).append(p)
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def command(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().rstrip("\0").split("\0")
    except FileNotFoundError:  # it has just exited
        return []


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "zombie" not in status.lower()


class DevProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.base = f"http://127.0.0.1:{env['RIDEHAIL_API_PORT']}"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([RIDEHAIL, "dev"], env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.base + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready: {self.log.read_text()}")

    def interrupt(self) -> list[int]:
        """Ctrl-C (SIGINT to the process group, as a terminal sends it); returns the
        processes of the tree still alive after it exits."""
        tree = [self.proc.pid, *descendants(self.proc.pid)]
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(30)
        time.sleep(0.5)
        return [p for p in tree if alive(p)]

    def kill(self) -> None:
        if self.proc.poll() is None:
            for p in [self.proc.pid, *descendants(self.proc.pid)]:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def headers(secret: str, role: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(secret, role, sub)}"}  # type: ignore[arg-type]


def run_ride(base: str, secret: str) -> str:
    def call(method: str, path: str, role: str, sub: str, **kw) -> httpx.Response:  # type: ignore[no-untyped-def]
        r = httpx.request(method, base + path, headers=headers(secret, role, sub), timeout=20,
                          **kw)
        assert r.status_code < 300, (method, path, r.status_code, r.text)
        return r

    def until(pred, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    call("PUT", "/v1/drivers/me", "driver", "d1",
         json={"name": "D", "vehicle": {"make": "Kia", "model": "Niro", "plate": "D1"}})
    call("POST", "/v1/drivers/me/online", "driver", "d1", json={"lat": 40.7505, "lng": -73.9905})
    ride = call("POST", "/v1/rides", "rider", "r1", json={
        "pickup": {"lat": 40.75, "lng": -73.99}, "dropoff": {"lat": 40.76, "lng": -73.97},
    }).json()["ride_id"]

    def status() -> str:
        return call("GET", f"/v1/rides/{ride}", "rider", "r1").json()["status"]

    until(lambda: any(o["ride_id"] == ride for o in
                      call("GET", "/v1/drivers/me/offers", "driver", "d1").json()), "an offer")
    for action, then in (("accept", "driver_assigned"), ("arrive", "driver_arrived"),
                         ("start", "in_progress")):
        call("POST", f"/v1/rides/{ride}/{action}", "driver", "d1")
        until(lambda then=then: status() == then, then)
    call("POST", f"/v1/rides/{ride}/complete", "driver", "d1",
         json={"distance_m": 2300, "duration_s": 540})
    until(lambda: status() == "completed", "completed")
    return ride


def dev_environment(tmp_path: Path) -> dict[str, str]:
    """This environment, with servers on free ports and a data dir of the test's own."""
    env = dict(os.environ)
    env.update(
        RIDEHAIL_DATA_DIR=str(tmp_path / "data"),
        RIDEHAIL_API_PORT=str(free_port()),
        RIDEHAIL_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
        RIDEHAIL_TEMPORAL_UI_PORT=str(free_port()),
        RIDEHAIL_NATS_URL=f"nats://127.0.0.1:{free_port()}",
        PYTHONUNBUFFERED="1",
    )
    env.pop("RIDEHAIL_JWT_SECRET", None)
    env.pop("RIDEHAIL_DATABASE_URL", None)
    return env
