"""What a bench run checks: before it, that the stack answers; after it, that every ride
ended, the consumers caught up, ``ridehail audit`` passes and nothing new is in the
DLQ."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

from nats.js import JetStreamContext

from infra.config import Settings
from ridehail.load.benchfigures import BenchReport, RunFigures

if TYPE_CHECKING:
    from ridehail.processes.components import Runtime


def unreachable(settings: Settings, api: bool = True) -> list[str]:
    """The stack's services that do not answer (``name host:port``)."""
    from ridehail.processes.serverprocess import answering

    wanted = {"NATS": settings.nats_host_port, "Temporal": settings.temporal_host_port}
    if api:
        wanted["the API"] = (settings.api_host, settings.api_port)
    return [f"{name} {host}:{port}" for name, (host, port) in wanted.items()
            if not answering(host, port)]


def missing_database(settings: Settings) -> str | None:
    """Why the bench cannot see the stack's database, if it cannot (a SQLite file that is
    not there: the bench was given another data dir than the stack's)."""
    url = settings.db_url
    if url.startswith("sqlite") and not Path(url.split("///", 1)[-1]).exists():
        return (f"no database at {url}: set RIDEHAIL_DATA_DIR (or RIDEHAIL_DATABASE_URL) to "
                "the running stack's")
    return None


async def caught_up(js: JetStreamContext, timeout_s: float = 120.0) -> bool:
    """Wait until every consumer group has nothing pending; False at the timeout."""
    from events.lag import all_caught_up

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await all_caught_up(js):
            return True
        await asyncio.sleep(0.1)
    return False


async def check_ridehail(settings: Settings, report: BenchReport, figures_: RunFigures,
                          drained: bool, rt: Runtime, dlq_before: int) -> None:
    """Every ride ended, the consumers caught up, ``ridehail audit`` passes, nothing new
    in the DLQ."""
    from events.dlq import dlq_depth
    from ridehail.ops.audit import run_audit

    report.checks["every ride ended"] = {
        "ok": figures_.ended == figures_.rides, "ended": figures_.ended,
        "rides": figures_.rides, "statuses": figures_.statuses}
    report.checks["consumers caught up"] = {"ok": drained and await caught_up(rt.js)}
    missing = missing_database(settings)
    if missing is None:
        assert rt.temporal is not None
        audit = await run_audit(rt.db, rt.js, rt.temporal)
        report.checks["ridehail audit"] = {
            "ok": audit.ok,
            "failed": [f"{c.number}. {c.name}: {c.count} violations, e.g. {c.violations[:3]}"
                       for c in audit.checks if not c.ok],
            "checks": {str(c.number): c.ok for c in audit.checks}}
    else:
        report.checks["ridehail audit"] = {"ok": False, "failed": [missing]}
    dlq_after = await dlq_depth(rt.js)
    report.checks["nothing new in the DLQ"] = {
        "ok": dlq_after == dlq_before, "before": dlq_before, "after": dlq_after}
