"""What storing an event in the outbox costs on PostgreSQL (docs/DEPLOY.md, "The event log
on PostgreSQL").

Makes a schema of its own in the database of ``--postgres``, migrates it, optionally
fills the outbox with ``--history`` older events spread over the ``--months`` before this
one (so a partitioned outbox has that many monthly partitions, and the migration that
partitions it has rows to copy), then writes ``--events`` events, each in a transaction
of its own, as every write does: ``stage`` (the insert that skips an id already
stored) and the check for an earlier unpublished event of the same ride. Then it marks
them published in batches of ``MARK_BATCH``, as a writer's batches do. It reports the
time of each part, and drops the schema.

Run from the project root with the project's Python (the dev extra installed):

    python deploy/sizing/outbox_stage.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test

Nothing here is a test: it reports what it saw on this machine.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, text

from events.envelope import CloudEvent
from events.outbox import Outbox, _behind_unpublished, stage
from store import migrate
from store.db import Database

RIDES = 500  # the events go to this many rides, in turn
MARK_BATCH = 20
WARM_UP = 200
DATA = {"note": "x" * 600}  # about the size of a ride event's body


@contextmanager
def own_schema(url: str) -> Iterator[str]:
    """A schema of its own in ``url``'s database: the URL that uses it."""
    schema = f"outbox_stage_{uuid.uuid4().hex[:8]}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def fill_history(url: str, rows: int, months: int) -> None:
    """``rows`` published events spread evenly over the ``months`` before this one."""
    if rows <= 0:
        return
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO outbox (event_id, aggregate_id, subject, body, created_at,"
            " published_at, attempts) "
            "SELECT 'h-' || n, 'ride-h' || (n % 5000), 'rides.h.x', :body,"
            " date_trunc('month', now()) - make_interval(days => 1)"
            "   - (n::float / :rows) * make_interval(days => 30 * :months - 2),"
            " now(), 0 FROM generate_series(1, :rows) AS n"),
            {"rows": rows, "months": months, "body": json.dumps(DATA)})
    engine.dispose()


def an_event(n: int) -> CloudEvent:
    return CloudEvent(id=str(uuid.uuid4()), source="ridehail/sizing", type="ride.requested",
                      subject=f"ride-{n % RIDES}", time=datetime.now(UTC), dataversion=1,
                      data=DATA)


def write_events(db: Database, count: int
                 ) -> tuple[dict[str, list[float]], list[tuple[str, datetime]]]:
    """Write ``count`` events one transaction each: the times (seconds) of the whole
    transaction, of the stage statement and of the check for an earlier unpublished
    event; and the ids written, each with a time no later than its row's."""
    times: dict[str, list[float]] = {"write_transaction": [], "stage": [], "behind_check": []}
    written = []
    for n in range(count):
        event = an_event(n)
        written.append((event.id, datetime.now(UTC)))
        started = time.perf_counter()
        with db.writing() as session:
            session.connection()  # BEGIN
            staging = time.perf_counter()
            rows = stage(session, [event])
            checking = time.perf_counter()
            _behind_unpublished(session, rows)
            times["behind_check"].append(time.perf_counter() - checking)
            times["stage"].append(checking - staging)
        times["write_transaction"].append(time.perf_counter() - started)
    return times, written


def mark_all(db: Database, written: list[tuple[str, datetime]]) -> list[float]:
    """Mark the events published in batches, as a writer does: with the time of the
    batch's oldest where ``_mark_published`` takes it (since migration 0007)."""
    takes_since = "since" in inspect.signature(Outbox._mark_published).parameters
    times = []
    for i in range(0, len(written), MARK_BATCH):
        batch = written[i:i + MARK_BATCH]
        since = {"since": min(t for _, t in batch)} if takes_since else {}
        started = time.perf_counter()
        with db.writing() as session:
            Outbox._mark_published(session, [event_id for event_id, _ in batch], **since)
        times.append(time.perf_counter() - started)
    return times


def summary(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {"mean_ms": round(statistics.fmean(ms), 3),
            "p50_ms": round(ms[len(ms) // 2], 3),
            "p95_ms": round(ms[int(len(ms) * 0.95)], 3),
            "p99_ms": round(ms[int(len(ms) * 0.99)], 3)}


def measure(url: str, events: int, history: int, months: int) -> dict[str, Any]:
    migrate.upgrade(url, "0006")  # the outbox before it was partitioned
    fill_history(url, history, months)
    started = time.perf_counter()
    migrate.upgrade(url)
    upgraded_s = time.perf_counter() - started
    db = Database(url)
    try:
        with db.reading() as session:
            partitions = session.execute(text(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'outbox'::regclass"
            )).scalar_one()
        write_events(db, WARM_UP)
        times, written = write_events(db, events)
        marking = mark_all(db, written)
    finally:
        db.dispose()
    return {"revision": migrate.head(), "events": events, "history_rows": history,
            "partitions": partitions, "upgrade_to_head_s": round(upgraded_s, 2),
            **{name: summary(seconds) for name, seconds in times.items()},
            f"mark_published_batch_of_{MARK_BATCH}": summary(marking)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", required=True, help="a PostgreSQL URL (its database)")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--history", type=int, default=0,
                        help="older events in the outbox before the run")
    parser.add_argument("--months", type=int, default=1,
                        help="the months before this one the older events span")
    args = parser.parse_args()
    with own_schema(args.postgres) as url:
        print(json.dumps(measure(url, args.events, args.history, args.months), indent=2))


if __name__ == "__main__":
    main()
