"""What a soak (``ridehail.load.soak``) prints at its end: the rides and each minute's
latency, the p95 drift, every process's memory (after the warm-up, at the end, over the
second half, by minute) and CPU per ride by minute, what the streams and the pruned tables
held at the end of each minute, what each stream stores, and the end-of-run checks."""

from __future__ import annotations

from rich.console import Console

from ridehail.load.soak import SoakReport


def print_soak(report: SoakReport, console: Console) -> None:
    console.print(f"soak: {report.rides} rides over {report.duration_s:.0f} s at "
                  f"{report.rate_per_s:.2f} rides/s — {report.statuses}")
    for m in report.per_minute:
        p = m["to_completed"]
        console.print(f"  minute {m['minute']}: {m['rides']} rides, p50 "
                      f"{_ms(p['p50'])} ms, p95 {_ms(p['p95'])} ms to completion")
    drift = report.p95_drift
    console.print(f"  p95 last whole minute / first: {'—' if drift is None else f'{drift:.2f}'}")
    for role, mem in report.processes.items():
        growth = mem.rss_growth_pct
        half = mem.rss_second_half_pct
        console.print(f"  {role:<9} RSS {_mb(mem.rss_warm_mb)} → {_mb(mem.rss_end_mb)} MB "
                      f"({'—' if growth is None else f'{growth:+.1f}%'}; second half "
                      f"{'—' if half is None else f'{half:+.1f}%'}), peak "
                      f"{mem.rss_peak_mb:.0f} MB")
        by_minute = [(m["rss_mb"].get(role), m["cpu_ms_per_ride"].get(role))
                     for m in report.per_minute]
        if len(by_minute) > 1:
            console.print(f"  {'':<9} by minute: RSS "
                          f"{', '.join(_mb(r) for r, _ in by_minute)} MB; CPU per ride "
                          f"{', '.join(_mb(c) for _, c in by_minute)} ms")
    _print_kept(report, console)
    if report.streams:
        console.print(f"  {'streams':<9} stored "
                      + ", ".join(f"{name} {_mib(s.warm_mib)} → {_mib(s.end_mib)} MiB"
                                  for name, s in report.streams.items())
                      + " (nats-server holds the block each writes, up to 8 MiB)")
    for name, check in report.checks.items():
        console.print(f"  {'ok  ' if check.get('ok') else 'FAIL'} {name}", markup=False)


def _print_kept(report: SoakReport, console: Console) -> None:
    """What the streams and the pruned tables held at the end of each minute."""
    if not report.kept_by_minute:
        return
    streams = dict.fromkeys(s for k in report.kept_by_minute for s in k["streams"])
    for name in streams:
        console.print(f"  {'':<9} {name} by minute: " + ", ".join(
            f"{k['streams'][name]['messages']}" if name in k["streams"] else "—"
            for k in report.kept_by_minute) + " messages")
    tables = dict.fromkeys(s for k in report.kept_by_minute for s in k["rows"])
    for table in tables:
        console.print(f"  {'':<9} {table} by minute: " + ", ".join(
            str(k["rows"].get(table, "—")) for k in report.kept_by_minute) + " rows")


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v * 1000:.0f}"


def _mib(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


def _mb(v: float | None) -> str:  # or any figure already in its unit
    return "—" if v is None else f"{v:.0f}"
