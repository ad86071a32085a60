"""The image's ``HEALTHCHECK`` (``python -m ridehail.healthcheck``): is this container's
ridehail component healthy?

One image runs every component, so this finds which one the container runs (its
command line, behind Docker's init if any) and checks what that one needs: the API
answers ``/healthz``; the worker reaches Temporal and NATS; the consumers and the relay
reach NATS. One-shot commands (``db upgrade``) are healthy while they run. Exit 0 when
healthy, 1 with the reason on stderr otherwise. Compose files may set a stricter probe
(``docker-compose.yml`` asks the API's ``/readyz``).
"""

from __future__ import annotations

import socket
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from infra.config import Settings

COMPONENTS = ("api", "worker", "consumers", "relay")
TIMEOUT_S = 3.0


def running_component(cmdline: list[str]) -> str | None:
    """The component in a command line like ``[/sbin/docker-init, --, ridehail, api]``."""
    for i, arg in enumerate(cmdline[:-1]):
        if Path(arg).name == "ridehail" or arg == "ridehail.cli":
            return cmdline[i + 1] if cmdline[i + 1] in COMPONENTS else None
    return None


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_S):
            return True
    except OSError:
        return False


def problems(component: str | None, settings: Settings) -> list[str]:
    found: list[str] = []
    if component == "api":
        host = settings.api_host if settings.api_host not in ("0.0.0.0", "::") else "127.0.0.1"
        url = f"http://{host}:{settings.api_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as answer:
                if answer.status != 200:
                    found.append(f"{url} answered {answer.status}")
        except OSError as e:
            found.append(f"{url}: {e}")
    if component in ("worker", "consumers", "relay"):
        servers = [urlparse(u) for u in settings.nats_servers]
        if not any(_reachable(s.hostname or "127.0.0.1", s.port or 4222) for s in servers):
            found.append(f"no NATS server answers at {settings.nats_url}")
    if component == "worker" and not _reachable(*settings.temporal_host_port):
        found.append(f"Temporal does not answer at {settings.temporal_address}")
    return found


def main() -> int:
    try:
        cmdline = Path("/proc/1/cmdline").read_text().rstrip("\0").split("\0")
    except OSError:
        cmdline = []
    found = problems(running_component(cmdline), Settings())
    for problem in found:
        print(f"unhealthy: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
