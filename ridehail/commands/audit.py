"""``ridehail audit``: check the invariants of CONTRACT.md section 7 on the running
system and report each, as text or as JSON."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from ridehail.commands.oneshot import run_once
from ridehail.commands.options import AsJson
from ridehail.terminal import results

if TYPE_CHECKING:
    from ridehail.ops.audit import AuditReport
    from ridehail.processes.components import Runtime


def audit(as_json: AsJson = False) -> None:
    """Check the invariants of CONTRACT.md section 7; exit 0 when all hold, 1 otherwise.
    The report is printed on stdout."""
    report = run_once("audit", _audit_report, temporal=True)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        _print(report)
    raise typer.Exit(0 if report.ok else 1)


async def _audit_report(rt: Runtime) -> AuditReport:
    from ridehail.ops.audit import run_audit

    assert rt.temporal is not None  # a runtime with Temporal, as asked
    return await run_audit(rt.db, rt.js, rt.temporal, rt.settings)


def _print(report: AuditReport) -> None:
    """Each check with its mark and the violations it found (at most those it kept)."""
    for check in report.checks:
        mark = "[green]ok  [/]" if check.ok else "[red]FAIL[/]"
        results.print(f"{mark} {check.number}. {escape(check.name)} ({check.checked} checked)")
        for v in check.violations:
            results.print(f"       - {escape(str(v))}")
        if check.count > len(check.violations):
            results.print(f"       … and {check.count - len(check.violations)} more")
    results.print("all invariants hold" if report.ok else "[red]invariants violated[/]")
