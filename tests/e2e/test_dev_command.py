"""``ridehail dev`` as a user runs it: a real process tree, a ride through the HTTP API,
Ctrl-C, nothing left behind; run again on the same data dir, the ride is still there."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from domain.status import RideStatus
from infra.config import Settings
from ridehail.processes.devstack import ridehail_command, runs_component
from ridehail.processes.serverprocess import answering
from tests.support.devprocess import (
    RIDEHAIL,
    DevProcess,
    command,
    descendants,
    dev_environment,
    headers,
    run_ride,
)


@pytest.fixture
def dev_env(tmp_path: Path) -> dict[str, str]:
    return dev_environment(tmp_path)


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
        # the Temporal server's SQLite file keeps a write-ahead log (one fsync per commit,
        # not a rollback journal's several)
        temporal_db = Path(dev_env["RIDEHAIL_DATA_DIR"]) / "temporal.db"
        with contextlib.closing(sqlite3.connect(temporal_db)) as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
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
            ridehail_command("worker")]
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


def test_dev_refuses_an_api_port_something_else_answers_on(dev_env: dict[str, str]) -> None:
    """Another program (another ``ridehail dev``, say) holds the API's port: dev says so
    and stops before it starts anything, instead of saying ready of the other program."""
    with socket.create_server(("127.0.0.1", int(dev_env["RIDEHAIL_API_PORT"]))):
        out = subprocess.run([RIDEHAIL, "dev"], env=dev_env, capture_output=True, text=True,
                             timeout=60)
    printed = (out.stdout + out.stderr).replace("\n", "")
    assert out.returncode == 1, printed
    assert f"something already answers on http://127.0.0.1:{dev_env['RIDEHAIL_API_PORT']}" \
        in printed
    assert "RIDEHAIL_API_PORT" in printed and "Ctrl-C to stop" not in printed
    # nothing was started: no server answers on the ports it would have used
    nats_port = int(dev_env["RIDEHAIL_NATS_URL"].rsplit(":", 1)[1])
    temporal_port = int(dev_env["RIDEHAIL_TEMPORAL_ADDRESS"].rsplit(":", 1)[1])
    assert not answering("127.0.0.1", nats_port)
    assert not answering("127.0.0.1", temporal_port)


def test_a_second_dev_on_the_same_data_dir_is_refused_and_changes_nothing(
    dev_env: dict[str, str], tmp_path: Path
) -> None:
    """Another ``ridehail dev`` on a data dir a running one holds is refused before it
    starts anything: it names the running one, starts no server, leaves its ``dev.json``
    as it was, and the first goes on answering."""
    dev = DevProcess(dev_env, tmp_path / "dev.log")
    try:
        dev.wait_ready()
        data = Path(dev_env["RIDEHAIL_DATA_DIR"])
        written = {name: (data / name).read_bytes() for name in ("dev.json", "dev.lock")}
        tree = sorted(descendants(dev.proc.pid))
        # its own ports, so that a server it started would be seen answering there
        second_env = {**dev_env, **{k: v for k, v in dev_environment(tmp_path / "2").items()
                                    if k != "RIDEHAIL_DATA_DIR" and k.startswith("RIDEHAIL_")}}
        out = subprocess.run([RIDEHAIL, "dev"], env=second_env, capture_output=True,
                             text=True, timeout=60)
        printed = (out.stdout + out.stderr).replace("\n", "")
        assert out.returncode == 1, printed
        assert f"PID {dev.proc.pid}" in printed and dev.base in printed, printed
        assert "RIDEHAIL_DATA_DIR" in printed and "Ctrl-C to stop" not in printed
        for key in ("RIDEHAIL_NATS_URL", "RIDEHAIL_TEMPORAL_ADDRESS"):
            assert not answering("127.0.0.1", int(second_env[key].rsplit(":", 1)[1]))
        assert not answering("127.0.0.1", int(second_env["RIDEHAIL_API_PORT"]))
        assert {name: (data / name).read_bytes() for name in written} == written
        assert sorted(descendants(dev.proc.pid)) == tree
        assert httpx.get(dev.base + "/readyz", timeout=5).status_code == 200
        assert dev.interrupt() == []
        assert not (data / "dev.json").exists()  # removed by the dev that wrote it
    finally:
        dev.kill()


def test_dev_takes_the_data_dir_again_once_the_first_stopped(
    dev_env: dict[str, str], tmp_path: Path
) -> None:
    """The lock goes with the process: killed, its data dir is free for the next dev."""
    dev = DevProcess(dev_env, tmp_path / "dev.log")
    try:
        dev.wait_ready()
    finally:
        dev.kill()
    dev.proc.wait(30)
    again = DevProcess(dev_env, tmp_path / "dev2.log")
    try:
        again.wait_ready()
        assert again.interrupt() == []
    finally:
        again.kill()
