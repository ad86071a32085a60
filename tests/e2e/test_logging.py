"""What a component logs: with -v the API's access log and the component's lifecycle;
with RIDEHAIL_LOG_FORMAT=json one JSON object a line; no third-party set-up chatter."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from infra.config import Settings
from infra.logs import JsonFormatter
from tests.support.servers import free_port

RIDEHAIL = str(Path(sys.executable).parent / "ridehail")


def test_api_logs_requests_and_its_lifecycle_as_json_lines(servers: Settings,
                                                           tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIDEHAIL_")}
    env.update(RIDEHAIL_DATA_DIR=str(tmp_path), RIDEHAIL_NATS_URL=servers.nats_url,
               RIDEHAIL_TEMPORAL_ADDRESS=servers.temporal_address,
               RIDEHAIL_API_PORT=str(port), RIDEHAIL_JWT_SECRET="s" * 32,
               RIDEHAIL_LOG_FORMAT="json")
    proc = subprocess.Popen([RIDEHAIL, "api", "-v"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        httpx.get(f"http://127.0.0.1:{port}/v1/rides/nowhere", timeout=5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    # every line but the one that says it runs is a JSON log record
    records = [json.loads(line) for line in lines if "api running" not in line]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records), records
    messages = [r["message"] for r in records]
    access = [m for m in messages if "GET /healthz" in m]
    assert access and any("GET /v1/rides/nowhere" in m and "401" in m for m in messages)
    lifecycle = [m for m in messages if m in ("api started", "api stopping", "api stopped")]
    assert lifecycle == ["api started", "api stopping", "api stopped"], messages
    assert not [r for r in records if r["logger"].startswith("alembic")], records


def test_json_records_carry_the_ride_id_where_there_is_one() -> None:
    record = logging.LogRecord("events.consumer", logging.WARNING, __file__, 1,
                               "ride-projector: %s failed", ("e1",), None)
    assert "ride_id" not in json.loads(JsonFormatter().format(record))
    record.ride_id = "r-123"
    doc = json.loads(JsonFormatter().format(record))
    assert doc["ride_id"] == "r-123" and doc["message"] == "ride-projector: e1 failed"
    assert doc["level"] == "WARNING" and doc["time"].endswith("Z")
