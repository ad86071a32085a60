"""What the sizing scripts beside this file read from the machine, and what
scale_curve.py decides: the CPU time and memory of a process (/proc/PID), the machine's
busy CPU (/proc/stat), the CPU of the PostgreSQL server processes that serve one database
(pg_stat_activity and /proc), the configurations given by name, and the saturation rule
of a sweep. Nothing here imports its siblings, so the rules can be tested alone."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg

from ridehail.healthcheck import COMPONENTS

DEFAULT_CONFIGS = ("1-each", "api×2", "worker×2", "consumers×2", "relay×2", "all×2")
# a sweep step that gains less than this over the step before: throughput stopped rising
MIN_GAIN = 0.10
_ALIASES = {"workers": "worker", "consumer": "consumers", "relays": "relay", "apis": "api"}
_TERM = re.compile(r"([a-z]+)\s*[×xX*]\s*(\d+)")


def parse_config(text: str) -> tuple[str, dict[str, int]]:
    """A configuration by name: ``1-each`` (one process of each component), ``KIND×N``
    (that component N times, the others once; ``x`` or ``*`` for ``×``), ``all×N``, or
    terms joined by ``+`` (``api×2+worker×3``). Returns its canonical name and the
    number of processes of each component."""
    counts = dict.fromkeys(COMPONENTS, 1)
    text = text.strip()
    if text == "1-each":
        return text, counts
    names = []
    for term in text.split("+"):
        match = _TERM.fullmatch(term.strip())
        kind = _ALIASES.get(match.group(1), match.group(1)) if match else ""
        if not match or (kind not in COMPONENTS and kind != "all") or int(match.group(2)) < 1:
            raise ValueError(f"not a configuration: {term!r} (1-each, KIND×N or all×N, "
                             f"KIND one of {', '.join(COMPONENTS)}, joined by +)")
        n = int(match.group(2))
        for k in COMPONENTS if kind == "all" else (kind,):
            counts[k] = n
        names.append(f"{kind}×{n}")
    return "+".join(names), counts


def saturation(steps: Sequence[tuple[int, float]], min_gain: float = MIN_GAIN
               ) -> dict[str, Any]:
    """Where throughput stops rising in a sweep: ``steps`` are (rides in flight,
    rides/s) in the order run. The first step that gains less than ``min_gain`` over the
    step before is where it stopped; the step before it is the knee. ``stops_at`` is
    None when every step gained at least that much (still rising at the last)."""
    for (before, rate_before), (at, rate) in pairwise(steps):
        if rate_before > 0:
            gain = (rate - rate_before) / rate_before
        else:
            gain = math.inf if rate > 0 else 0.0
        if gain < min_gain:
            return {"rule": f"first step gaining < {100 * min_gain:.0f}%", "stops_at": at,
                    "knee": before, "knee_rides_per_s": rate_before,
                    "gain_pct": round(100 * gain, 1)}
    last = steps[-1] if steps else (None, None)
    return {"rule": f"first step gaining < {100 * min_gain:.0f}%", "stops_at": None,
            "knee": None, "still_rising_at": last[0], "last_rides_per_s": last[1]}


def describe_saturation(sat: dict[str, Any]) -> str:
    if sat["stops_at"] is None:
        return (f"throughput still rising at {sat['still_rising_at']} in flight "
                f"({sat['rule']}: none)")
    return (f"throughput stops rising at {sat['stops_at']} in flight: {sat['gain_pct']:+.1f}% "
            f"over {sat['knee']} ({sat['knee_rides_per_s']:.2f} rides/s), the knee")


def machine_ticks() -> tuple[int, int, int]:
    """(busy, total, steal) clock ticks of all CPUs since boot, from /proc/stat: busy is
    user, nice, system, irq and softirq; total adds idle, iowait and steal."""
    first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    busy = user + nice + system + irq + softirq
    return busy, busy + idle + iowait + steal, steal


def proc_stat(pid: int) -> tuple[str, list[str]] | None:
    """A process's command name, and the fields of /proc/PID/stat after it (field 3, the
    state, first); None once it is gone."""
    try:
        head, _, rest = Path(f"/proc/{pid}/stat").read_text().rpartition(")")
    except OSError:
        return None
    return head.partition("(")[2], rest.split()


def _cpu(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    stat = proc_stat(pid)
    return 0.0 if stat is None else _cpu(stat[1])


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _stat(pid: int) -> tuple[str, int, int, float] | None:
    """(command, parent pid, start time in ticks since boot, CPU seconds) of a process."""
    stat = proc_stat(pid)
    if stat is None:
        return None
    comm, fields = stat
    return comm, int(fields[1]), int(fields[19]), _cpu(fields)


_ACTIVITY = ("SELECT pid, datname IS NOT NULL FROM pg_stat_activity "
             "WHERE datname = %s OR datname IS NULL")


class PostgresCpu:
    """CPU used over a window by the PostgreSQL processes that serve one database (its
    client backends and autovacuum workers: ``postgres``), and by the server's shared
    processes (postmaster, checkpointer, WAL writer, background writer...: ``postgres-
    shared``, whatever database their work is for). Processes are found in
    pg_stat_activity and read in /proc, so only on the same machine as the server; call
    ``poll`` often, since a backend that exits between two polls loses what it used
    after the earlier one (``exited`` counts those)."""

    def __init__(self, conninfo: str, database: str) -> None:
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.database = database
        self.first: dict[tuple[int, int], float] = {}
        self.last: dict[tuple[int, int], float] = {}
        self.group: dict[tuple[int, int], str] = {}
        self.gone: set[tuple[int, int]] = set()
        self.local = True
        self._since = 0.0  # window start, in ticks since boot

    def start(self) -> None:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        self._since = uptime * os.sysconf("SC_CLK_TCK")
        for kept in (self.first, self.last, self.group):
            kept.clear()
        self.gone.clear()
        self.poll()

    def poll(self) -> None:
        found = {int(pid): "postgres" if ours else "postgres-shared"
                 for pid, ours in self.conn.execute(_ACTIVITY, (self.database,)).fetchall()}
        stats = {pid: _stat(pid) for pid in found}
        if not any(s is not None and s[0].startswith("postgres") for s in stats.values()):
            self.local = False  # the server runs elsewhere: its processes are not here
            return
        postmaster = next(s[1] for s in stats.values() if s and s[0].startswith("postgres"))
        found[postmaster], stats[postmaster] = "postgres-shared", _stat(postmaster)
        for pid, group in found.items():
            stat = stats[pid]
            if stat is None or not stat[0].startswith("postgres"):
                continue
            key = (pid, stat[2])
            if key not in self.first:
                # there before the window started: count from now; born since: all of it
                self.first[key] = stat[3] if stat[2] < self._since else 0.0
                self.group[key] = group
        for key in self.first.keys() - self.gone:
            stat = _stat(key[0])
            if stat is None or stat[2] != key[1]:
                self.gone.add(key)
            else:
                self.last[key] = stat[3]

    def totals(self) -> dict[str, float]:
        sums = {"postgres": 0.0, "postgres-shared": 0.0}
        for key, first in self.first.items():
            sums[self.group[key]] += self.last.get(key, first) - first
        return sums

    def figures(self) -> dict[str, Any]:
        ours = [k for k, g in self.group.items() if g == "postgres"]
        return {"measured": self.local, "database": self.database,
                "backends_seen": len(ours), "backends_exited": len(self.gone & set(ours)),
                "shared_processes": len(self.group) - len(ours)}

    def close(self) -> None:
        self.conn.close()
