"""The check of issue 18 as a user would run it: ``ridehail dev`` with the standard
OTEL_* variables pointing at an OTLP/HTTP receiver. One ride is one trace holding the
HTTP request, NATS messaging spans, the workflow and its activities, from the dev
process and its worker process; and each process's /metrics answers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx

from infra.config import Settings
from tests.support.devprocess import RIDEHAIL, DevProcess, dev_environment, run_ride
from tests.support.otlp import ReceivedSpan, otlp_receiver

SERVER = 2  # Span.SpanKind.SPAN_KIND_SERVER


def wait_for(check, what: str, timeout: float = 30):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_dev_exports_one_trace_per_ride_and_serves_metrics(tmp_path: Path) -> None:
    with otlp_receiver() as otlp:
        env = dev_environment(tmp_path)
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
                   OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                   OTEL_BSP_SCHEDULE_DELAY="200")  # export every 0.2 s, not every 5
        env.pop("OTEL_SERVICE_NAME", None)
        env.pop("OTEL_SDK_DISABLED", None)
        dev = DevProcess(env, tmp_path / "dev.log")
        try:
            dev.wait_ready()
            secret = (Path(env["RIDEHAIL_DATA_DIR"]) / "jwt_secret").read_text().strip()
            ride = run_ride(dev.base, secret)

            def ride_trace() -> list[ReceivedSpan] | None:
                request = next((s for s in otlp.received() if s.kind == SERVER
                                and s.name == "POST /v1/rides"), None)
                if request is None:
                    return None
                spans = otlp.trace(request.trace_id)
                names = {s.name for s in spans}
                done = {"RunWorkflow:RideWorkflow", "RunActivity:complete_ride",
                        "process ride.completed"} <= names
                return spans if done else None

            spans = wait_for(ride_trace, f"the trace of ride {ride}")
            names = {s.name for s in spans}
            assert {"POST /v1/rides", "publish ride.requested", "process ride.requested",
                    "StartWorkflow:RideWorkflow", "RunWorkflow:RideWorkflow",
                    "RunActivity:quote_fare", "RunActivity:capture_payment"} <= names, names
            nats = [s for s in spans if s.attributes.get("messaging.system") == "nats"]
            assert {s.attributes["messaging.operation.type"] for s in nats} >= {
                "create", "publish", "process"}
            assert all(ride in s.attributes["messaging.destination.name"] for s in nats
                       if s.attributes.get("ridehail.ride_id") == ride)
            services = {s.service for s in spans}
            assert {"ridehail-dev", "ridehail-worker"} <= services, services
            assert {s.service for s in spans if s.name.startswith("RunActivity:")} == {
                "ridehail-worker"}

            # the banner names each process's /metrics; each answers
            banner = dev.log.read_text()
            urls = re.findall(r"http://127\.0\.0\.1:\d+/metrics", banner)
            assert len(urls) == 3, banner
            api, worker, consumers = (httpx.get(u, timeout=10).text for u in urls)
            assert "ridehail_http_requests_total" in api
            assert 'ridehail_rides_finished_total{outcome="completed",reason=""} 1.0' in worker
            assert "ridehail_time_to_driver_assigned_seconds_count 1.0" in worker
            assert 'ridehail_money_captured_total{currency="USD",purpose="fare"}' in worker
            assert "temporal_workflow_task_execution_latency" in worker, worker[:2000]
            assert "temporal_activity_execution_latency" in worker
            assert re.search(r'ridehail_consumer_events_total\{consumer="workflow-trigger",'
                             r'outcome="handled"\} [1-9]', consumers), consumers
            assert "ridehail_consumer_pending" in consumers
            assert "ridehail_dlq_depth 0.0" in consumers
            assert "ridehail_outbox_oldest_unpublished_seconds" in consumers
            assert dev.interrupt() == []
        finally:
            dev.kill()


def test_each_component_process_serves_its_metrics(servers: Settings, tmp_path: Path) -> None:
    """``ridehail worker`` / ``consumers`` / ``relay`` with their metrics ports set to 0
    say where they serve; each answers with its own figures."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RIDEHAIL_", "OTEL_"))}
    env.update(RIDEHAIL_DATA_DIR=str(tmp_path), RIDEHAIL_NATS_URL=servers.nats_url,
               RIDEHAIL_TEMPORAL_ADDRESS=servers.temporal_address, PYTHONUNBUFFERED="1",
               RIDEHAIL_WORKER_METRICS_PORT="0", RIDEHAIL_CONSUMERS_METRICS_PORT="0",
               RIDEHAIL_RELAY_METRICS_PORT="0")
    # one after another: each migrates the (SQLite) database as it starts
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        urls = {}
        for name in ("worker", "consumers", "relay"):
            proc = procs[name] = subprocess.Popen([RIDEHAIL, name], env=env, text=True,
                                                  stdout=subprocess.PIPE,
                                                  stderr=subprocess.STDOUT)
            assert proc.stdout is not None
            seen = []
            for line in proc.stdout:  # until it says it runs, and where its metrics are
                seen.append(line)
                if f"{name} running" in line:
                    found = re.search(r"http://127\.0\.0\.1:\d+/metrics", line)
                    assert found, line
                    urls[name] = found.group(0)
                    break
            else:
                raise AssertionError(f"{name} exited with {proc.wait()}: {''.join(seen)}")
        got = {name: httpx.get(url, timeout=10) for name, url in urls.items()}
        assert all(r.status_code == 200 for r in got.values())
        worker, consumers, relay = (got[n].text for n in ("worker", "consumers", "relay"))
        assert "temporal_" in worker and "ridehail_time_to_driver_assigned_seconds" in worker
        # what housekeeping removed: the worker runs it (every store, 0 until it removes)
        assert 'ridehail_pruned_rows_total{store="processed_events"} 0.0' in worker
        assert "ridehail_pruned_rows" not in consumers + relay
        assert 'ridehail_consumer_blocked_seconds{consumer="workflow-trigger"} 0.0' in consumers
        assert "ridehail_dlq_depth" in consumers and "ridehail_consumer_pending" in consumers
        assert "ridehail_outbox_oldest_unpublished_seconds 0.0" in relay
        assert "ridehail_consumer" not in relay and "temporal_" not in consumers
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
