"""What ``ridehail simulate`` knows and shows: its settings, the state of its city as
its riders and drivers see it, the live view and the summary."""

from __future__ import annotations

import statistics
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from domain.geo import Point
from domain.status import FINAL, RideStatus
from ridehail.load.city import City

DRIVER_STATUSES = ("available", "reserved", "on_trip", "offline")
ACTIVITIES = ("going online", "wandering", "to pickup", "at pickup", "on trip", "offline")
SURGE_WINDOW_S = 120.0  # the surge table shows quotes and rides of this long ago


@dataclass(frozen=True)
class SimConfig:
    city: City = field(default_factory=City)
    drivers: int = 30
    rate_per_min: float = 12.0
    p_accept: float = 0.8
    p_decline: float = 0.1  # the rest of the offers are ignored (left to expire)
    speed_kmh: float = 30.0
    speedup: float = 20.0
    ping_s: float = 2.0  # real seconds between a driver's location pings
    boarding_s: float = 60.0  # simulated seconds between arriving and starting the trip
    seed: int | None = None

    @property
    def speed_mps(self) -> float:
        return self.speed_kmh / 3.6


@dataclass
class SimDriver:
    driver_id: str
    pos: Point
    activity: str = "going online"
    status: str = "offline"  # as the API last said
    ride_id: str | None = None


@dataclass
class SimRide:
    ride_id: str
    rider_id: str
    zone: str
    requested_at: float
    status: str = RideStatus.REQUESTED
    surge: float | None = None
    assigned_at: float | None = None
    ended_at: float | None = None


@dataclass
class SimState:
    started: float = field(default_factory=time.monotonic)
    drivers: dict[str, SimDriver] = field(default_factory=dict)
    rides: dict[str, SimRide] = field(default_factory=dict)
    offers: Counter[str] = field(default_factory=Counter)
    quotes: deque[tuple[float, str, float]] = field(default_factory=lambda: deque(maxlen=2000))
    errors: Counter[str] = field(default_factory=Counter)
    event_rates: dict[str, float] = field(default_factory=dict)
    api_rate: float = 0.0
    trips: list[tuple[int, int]] = field(default_factory=list)  # (distance_m, duration_s)
    stopping: str | None = None

    def rides_by_status(self) -> Counter[str]:
        return Counter(r.status for r in self.rides.values())

    def error(self, what: str, e: BaseException) -> None:
        self.errors[f"{what}: {type(e).__name__}: {str(e)[:120]}"] += 1


@dataclass
class Summary:
    duration_s: float
    drivers: int
    requested: int
    statuses: dict[str, int]
    cancelled_at_stop: int
    offers: dict[str, int]
    to_assign_p50_s: float | None
    trips: int
    mean_trip_m: float | None
    mean_surge: float | None
    api_calls: int
    errors: dict[str, int]


# --- the live view ---------------------------------------------------------------------------


def summarize(s: SimState, cancelled_at_stop: int, api_calls: int) -> Summary:
    """What a run did, from its state at the end."""
    rides = list(s.rides.values())
    waits = [r.assigned_at - r.requested_at for r in rides if r.assigned_at is not None]
    surges = [r.surge for r in rides if r.surge is not None]
    return Summary(
        duration_s=time.monotonic() - s.started, drivers=len(s.drivers),
        requested=len(rides), statuses=dict(s.rides_by_status()),
        cancelled_at_stop=cancelled_at_stop, offers=dict(s.offers),
        to_assign_p50_s=statistics.median(waits) if waits else None,
        trips=len(s.trips),
        mean_trip_m=statistics.fmean(m for m, _ in s.trips) if s.trips else None,
        mean_surge=statistics.fmean(surges) if surges else None,
        api_calls=api_calls, errors=dict(s.errors))


def render(cfg: SimConfig, state: SimState) -> Group:
    """The live view: the city and the time run; rides, drivers and activity side by
    side; the surge by zone; the commonest errors."""
    head = _head(cfg, state)
    grid = Table.grid(padding=(0, 4))
    grid.add_row(_rides_table(state), _drivers_table(state), _activity_table(state))
    parts: list[Any] = [head, grid, _surge_table(state)]
    for message, n in state.errors.most_common(3):
        parts.append(Text(f"{n} x {message}", style="red"))
    return Group(*parts)


def _head(cfg: SimConfig, state: SimState) -> Text:
    """The city, the load, the speed-up and the time run."""
    elapsed = time.monotonic() - state.started
    city = cfg.city
    return Text.from_markup(
        f"[bold cyan]ridehail simulate[/]  city {city.lat:.4f},{city.lng:.4f} "
        f"r={city.radius_m / 1000:.1f} km · {cfg.drivers} drivers · "
        f"{cfg.rate_per_min:g} rides/min · time x{cfg.speedup:g} · "
        f"{int(elapsed // 60)}:{int(elapsed % 60):02d}  "
        + (f"[yellow]{state.stopping}[/]" if state.stopping else "[dim]Ctrl-C to stop[/]"))


def _rides_table(state: SimState) -> Table:
    rides = Table(title="rides", title_justify="left", show_edge=False)
    rides.add_column("status")
    rides.add_column("", justify="right")
    by_status = state.rides_by_status()
    for status in RideStatus:
        rides.add_row(status, str(by_status.get(status, 0)))
    rides.add_row("[bold]total[/]", f"[bold]{len(state.rides)}[/]")
    return rides


def _drivers_table(state: SimState) -> Table:
    """The drivers by status as the API last said, then by what they are doing."""
    drivers = Table(title="drivers", title_justify="left", show_edge=False)
    drivers.add_column("status")
    drivers.add_column("", justify="right")
    by_api = Counter(d.status for d in state.drivers.values())
    for status in DRIVER_STATUSES:
        drivers.add_row(status, str(by_api.get(status, 0)))
    by_activity = Counter(d.activity for d in state.drivers.values())
    for activity in ACTIVITIES:
        if by_activity.get(activity):
            drivers.add_row(f"[dim]· {activity}[/]", f"[dim]{by_activity[activity]}[/]")
    return drivers


def _surge_table(state: SimState) -> Table:
    """The ten zones with the highest recent surge (then the most open rides)."""
    surge = Table(title=f"surge by zone (last {SURGE_WINDOW_S / 60:g} min)",
                  title_justify="left", show_edge=False)
    for col in ("zone (H3 r7)", "quotes", "mean", "max", "open rides"):
        surge.add_column(col, justify="left" if col.startswith("zone") else "right")
    since = time.monotonic() - SURGE_WINDOW_S
    by_zone: dict[str, list[float]] = {}
    for t, zone, s in state.quotes:
        if t >= since:
            by_zone.setdefault(zone, []).append(s)
    open_by_zone = Counter(r.zone for r in state.rides.values() if r.status not in FINAL)
    zones = sorted(set(by_zone) | set(open_by_zone),
                   key=lambda z: (-max(by_zone.get(z, [1.0])), -open_by_zone.get(z, 0)))
    for zone in zones[:10]:
        values = by_zone.get(zone, [])
        surge.add_row(zone, str(len(values)),
                      f"{statistics.fmean(values):.2f}" if values else "—",
                      f"{max(values):.1f}" if values else "—", str(open_by_zone.get(zone, 0)))
    return surge


def _activity_table(state: SimState) -> Table:
    """Events and API calls a second, the offers' outcomes and the errors."""
    rates = Table(title="activity", title_justify="left", show_edge=False)
    rates.add_column("")
    rates.add_column("", justify="right")
    for stream in ("RIDES", "DRIVERS"):
        rate = state.event_rates.get(stream)
        rates.add_row(f"{stream} events/s", "n/a" if rate is None else f"{rate:.1f}")
    rates.add_row("API calls/s", f"{state.api_rate:.1f}")
    for outcome in ("accepted", "declined", "ignored", "too late"):
        rates.add_row(f"offers {outcome}", str(state.offers.get(outcome, 0)))
    rates.add_row("errors", str(sum(state.errors.values())))
    return rates


def print_summary(summary: Summary, console: Console) -> None:
    console.print()
    table = Table(title="simulation summary", title_justify="left")
    table.add_column("")
    table.add_column("", justify="right")

    def row(label: str, value: object) -> None:
        table.add_row(label, str(value))

    row("ran for", f"{summary.duration_s:.0f} s")
    row("drivers", summary.drivers)
    row("rides requested", summary.requested)
    for status in RideStatus:
        if summary.statuses.get(status):
            row(f"  {status}", summary.statuses[status])
    row("  of them cancelled at the stop", summary.cancelled_at_stop)
    row("trips driven", summary.trips)
    if summary.mean_trip_m is not None:
        row("mean trip", f"{summary.mean_trip_m / 1000:.2f} km")
    if summary.to_assign_p50_s is not None:
        row("time to a driver, median", f"{summary.to_assign_p50_s:.1f} s")
    if summary.mean_surge is not None:
        row("mean surge", f"{summary.mean_surge:.2f}")
    for outcome, n in sorted(summary.offers.items()):
        row(f"offers {outcome}", n)
    row("API calls", summary.api_calls)
    row("errors", sum(summary.errors.values()))
    console.print(table)
    for message, n in sorted(summary.errors.items(), key=lambda kv: -kv[1])[:5]:
        console.print(f"[red]{n} x[/] {message}")


