"""deploy/sizing/nats_memory.py runs end to end against a nats-server of its own and
reports a row per case; a case it does not know is refused. (The figures themselves
are measurements: they belong in docs/DEPLOY.md, not in assertions.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "deploy" / "sizing" / "nats_memory.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_it_reports_a_row_for_each_case() -> None:
    done = run("--messages", "500", "--idle", "0", "--cases", "ridehail,neither")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "500 messages of 800 bytes to RIDES, 64 in flight"
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"ridehail", "neither"}
    for cells in rows.values():
        # case, before, MiB, after, MiB, idle, MiB, bytes per message
        assert len(cells) == 8 and cells[2] == cells[4] == cells[6] == "MiB", cells
        float(cells[7])


def test_an_unknown_case_is_refused() -> None:
    done = run("--cases", "ridehail,everything")
    assert done.returncode == 2
    assert "unknown case 'everything'" in done.stderr
