"""Recording workflow histories for replay tests, from a running stack.

``ridehail histories record`` plays every saga scenario (ridehail.load.scenarios) through the
HTTP API, waits for each ride's workflow to close, and writes its history exactly as
``temporal workflow show --output json`` prints it, to ``<out>/<scenario>.json``. The
files are never edited by hand: record them again instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from infra.config import Settings
from infra.connections import connect_temporal
from ridehail.load.apiclient import Api
from ridehail.load.scenarios import SCENARIOS, Scene, Timeouts
from ridehail.processes.serverprocess import binary
from workflows.contract import workflow_id


def show_history(settings: Settings, wf_id: str) -> str:
    """The history as the Temporal CLI prints it (the format replay tests read)."""
    out = subprocess.run(
        [binary("temporal"), "workflow", "show", "--workflow-id", wf_id, "--output", "json",
         "--address", settings.temporal_address, "--namespace", settings.temporal_namespace],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"temporal workflow show {wf_id} failed: {out.stderr.strip()}")
    return out.stdout


async def record(
    settings: Settings,
    out_dir: Path,
    names: Sequence[str] = tuple(SCENARIOS),
    done: Callable[[str, str], None] | None = None,
) -> dict[str, Path]:
    """Run the named scenarios against the stack at ``settings.api_url`` at once (each
    in its own patch of the map) and write their histories; returns scenario → file."""
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenario(s) {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    timeouts = Timeouts(settings.offer_timeout_s, settings.matching_deadline_s,
                        settings.free_cancel_s)
    client = await connect_temporal(settings)
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    secret = settings.require_jwt_secret()

    api = Api(settings.api_url, secret)
    async with contextlib.aclosing(api):
        try:
            (await api.http.get("/readyz")).raise_for_status()
        except httpx.HTTPError as e:
            raise RuntimeError(f"no ready ridehail API at {settings.api_url} ({e}); start "
                               "`ridehail dev` with the same RIDEHAIL_* settings") from None
        async def one(index: int, name: str) -> tuple[str, Path]:
            scene = Scene(api, index, timeouts)
            ride_id = await SCENARIOS[name](scene)
            handle = client.get_workflow_handle(workflow_id(ride_id))
            await handle.result()  # closed: the history is complete
            path = out_dir / f"{name}.json"

            def save() -> None:
                path.write_text(show_history(settings, handle.id))

            await asyncio.to_thread(save)
            if done:
                done(name, ride_id)
            return name, path

        order = list(SCENARIOS)
        results = await asyncio.gather(*(one(order.index(n), n) for n in names))
    return dict(results)
