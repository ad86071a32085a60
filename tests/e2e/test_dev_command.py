"""``ridehail dev`` as a user runs it: a real process tree, a ride through the HTTP API,
Ctrl-C, nothing left behind; run again on the same data dir, the ride is still there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.auth import issue_token
from ridehail.config import Settings
from ridehail.devservers import answering
from ridehail.devstack import runs_component
from ridehail.domain.status import RideStatus
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


@pytest.fixture
def dev_env(tmp_path: Path) -> Iterator[dict[str, str]]:
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
    yield env


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


def test_dev_runs_a_ride_stops_cleanly_and_resumes_with_its_data(
    dev_env: dict[str, str], tmp_path: Path
) -> None:
    dev = DevProcess(dev_env, tmp_path / "dev.log")
    try:
        dev.wait_ready()
        printed = dev.log.read_text()
        for url in (dev.base, dev.base + "/docs",
                    f"http://127.0.0.1:{dev_env['RIDEHAIL_TEMPORAL_UI_PORT']}"):
            assert url in printed.replace("\n", ""), printed
        secret = (Path(dev_env["RIDEHAIL_DATA_DIR"]) / "jwt_secret").read_text().strip()
        ride = run_ride(dev.base, secret)
        # another terminal, with only the data dir: the commands find the stack's servers
        alone = {k: v for k, v in dev_env.items()
                 if k not in ("RIDEHAIL_NATS_URL", "RIDEHAIL_TEMPORAL_ADDRESS")}
        check = subprocess.run([RIDEHAIL, "streams", "check"], env=alone, capture_output=True,
                               text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "using the servers of the ridehail dev running on" in check.stderr
        assert dev_env["RIDEHAIL_NATS_URL"] in check.stdout
        left = dev.interrupt()
        assert left == [], f"processes left after Ctrl-C: {left}"
        assert dev.proc.returncode == 0, dev.log.read_text()
    finally:
        dev.kill()

    # again, on the same data dir: the ride, its events and its workflow are still there
    again = DevProcess(dev_env, tmp_path / "dev2.log")
    try:
        again.wait_ready()
        h = headers(secret, "rider", "r1")
        got = httpx.get(f"{again.base}/v1/rides/{ride}", headers=h, timeout=10).json()
        assert got["status"] == RideStatus.COMPLETED
        events = httpx.get(f"{again.base}/v1/rides/{ride}/events", headers=h, timeout=10)
        assert [e["type"] for e in events.json()["events"]][-1] == "ride.completed"
        out = subprocess.run(
            [str(Path(sys.executable).parent / "temporal"), "workflow", "describe",
             "--address", dev_env["RIDEHAIL_TEMPORAL_ADDRESS"], "-w", f"ride-{ride}",
             "-o", "json"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and "Completed" in out.stdout.replace("COMPLETED",
                                                                         "Completed"), out
        assert again.interrupt() == []
    finally:
        again.kill()


def test_dev_reuses_servers_already_running(
    dev_env: dict[str, str], tmp_path: Path, servers: Settings
) -> None:
    dev_env.update(RIDEHAIL_NATS_URL=servers.nats_url,
                   RIDEHAIL_TEMPORAL_ADDRESS=servers.temporal_address)
    dev = DevProcess(dev_env, tmp_path / "dev.log")
    try:
        dev.wait_ready()
        log = dev.log.read_text()
        assert "reusing the nats-server" in log and "reusing the temporal" in log, log
        # it started no server of its own: its only child is its worker process
        assert [command(p) for p in descendants(dev.proc.pid)] == [
            [sys.executable, "-m", "ridehail.cli", "worker"]]
        assert dev.interrupt() == []
    finally:
        dev.kill()
    # the servers it reused are still serving
    assert answering(*servers.nats_host_port) and answering(*servers.temporal_host_port)


def _wait_log(dev: DevProcess, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while text not in (log := dev.log.read_text()):
        assert time.monotonic() < deadline, f"{text!r} not in the log:\n{log}"
        assert dev.proc.poll() is None, log
        time.sleep(0.1)
    return log


def test_dev_restarts_its_worker_process_when_it_dies(
    dev_env: dict[str, str], tmp_path: Path
) -> None:
    dev = DevProcess(dev_env, tmp_path / "dev.log")
    try:
        dev.wait_ready()
        [worker] = [p for p in descendants(dev.proc.pid) if runs_component(command(p), "worker")]
        os.kill(worker, signal.SIGKILL)
        _wait_log(dev, "the worker process exited with code -9; restarting it in 1s")
        secret = (Path(dev_env["RIDEHAIL_DATA_DIR"]) / "jwt_secret").read_text().strip()
        run_ride(dev.base, secret)  # served by the restarted worker
        [again] = [p for p in descendants(dev.proc.pid) if runs_component(command(p), "worker")]
        assert again != worker
        assert dev.interrupt() == []
        assert dev.proc.returncode == 0, dev.log.read_text()
    finally:
        dev.kill()


def test_dev_restarts_a_server_that_dies_on_its_data(
    dev_env: dict[str, str], tmp_path: Path
) -> None:
    """nats-server and then the Temporal server are killed under ridehail dev: each is
    started again on its data, and rides go on (the first one's workflow survives)."""
    dev = DevProcess(dev_env, tmp_path / "dev.log")
    try:
        dev.wait_ready()
        secret = (Path(dev_env["RIDEHAIL_DATA_DIR"]) / "jwt_secret").read_text().strip()
        first = run_ride(dev.base, secret)
        for name, binary_name in (("nats-server", "nats-server"), ("temporal", "temporal")):
            [server] = [p for p in descendants(dev.proc.pid)
                        if Path(command(p)[0] if command(p) else "").name == binary_name]
            os.kill(server, signal.SIGKILL)
            _wait_log(dev, f"{name} exited with code -9; restarting it on its data")
            _wait_log(dev, f"{name} is back on")
        run_ride(dev.base, secret)
        got = httpx.get(f"{dev.base}/v1/rides/{first}", headers=headers(secret, "rider", "r1"),
                        timeout=10).json()
        assert got["status"] == "completed"
        assert dev.interrupt() == []
    finally:
        dev.kill()


def test_ctrl_c_while_the_worker_starts_stops_everything_cleanly(
    dev_env: dict[str, str], tmp_path: Path
) -> None:
    dev = DevProcess(dev_env, tmp_path / "dev.log")
    try:
        deadline = time.monotonic() + 60
        while not any(runs_component(command(p), "worker") for p in descendants(dev.proc.pid)):
            assert time.monotonic() < deadline, dev.log.read_text()
            time.sleep(0.02)
        assert dev.interrupt() == []
        assert dev.proc.returncode == 0, dev.log.read_text()
        assert "error" not in dev.log.read_text().lower()
    finally:
        dev.kill()
