"""The README's curl walk-through, run as written with bash against a real ``ridehail
dev`` started in a project folder, so the README cannot drift from what works."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent


def walk_through() -> str:
    text = README.read_text()
    section = text[text.index("## One ride with curl"):]
    start = section.index("```sh\n") + len("```sh\n")
    return section[start:section.index("```", start)]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A project folder with ``ridehail dev`` running in it (its state in ./.ridehail,
    as for a user), on free ports; the environment a second terminal would have."""
    folder = tmp_path / "project"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIDEHAIL_")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1",
               RIDEHAIL_API_PORT=str(free_port()),
               RIDEHAIL_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
               RIDEHAIL_TEMPORAL_UI_PORT=str(free_port()),
               RIDEHAIL_NATS_URL=f"nats://127.0.0.1:{free_port()}")
    api = f"http://127.0.0.1:{env['RIDEHAIL_API_PORT']}"
    log = tmp_path / "dev.log"
    with open(log, "wb") as out:
        dev = subprocess.Popen([str(BIN / "ridehail"), "dev"], cwd=folder, env=env,
                               stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert dev.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(f"{api}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield folder, {**env, "API": api}
    finally:
        os.killpg(dev.pid, signal.SIGINT)
        try:
            dev.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()


def bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # -e and pipefail: a step that fails ends the run there, as it would end a script
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


def test_the_readme_walk_through_completes_a_ride(
    project: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    folder, env = project
    script = walk_through()
    done = bash(script, folder, env)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    lines = done.stdout.splitlines()
    assert lines[0] == "{" or lines[0].startswith("{"), lines  # answers, one a line
    answers = [json.loads(line) for line in lines if line.startswith("{")]
    ride, events = answers[-2], answers[-1]
    assert ride["status"] == "completed" and ride["payment"]["status"] == "captured", ride
    assert [e["type"] for e in events["events"]][-1] == "ride.completed"
    # the trip report agrees with the trip meter: charged as reported, nothing adjusted
    ended = next(e["data"] for e in events["events"] if e["type"] == "ride.trip_ended")
    completed = events["events"][-1]["data"]
    assert ride["fare"]["adjusted"] is None, ride
    assert completed.get("fare_adjusted") is None, completed
    assert ended["duration_s"] > 0, ended  # the trip took time
    assert (completed["distance_m"], completed["duration_s"]) == (
        ended["distance_m"], ended["duration_s"]), (ended, completed)
    assert "using the JWT secret in " + str(folder / ".ridehail" / "jwt_secret") in done.stderr

    # from another folder it stops at once, saying what it looked for
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    started = time.monotonic()
    lost = bash(script, elsewhere, env)
    assert lost.returncode != 0 and time.monotonic() - started < 30
    assert f"{elsewhere / '.ridehail' / 'jwt_secret'} does not exist" in lost.stderr, lost
