"""``ridehail prune [--dry-run] [--json]``, run as an operator runs it: it says per store
what it would remove, removes the same, and needs the database alone (no NATS, no
Temporal)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from store.db import Database
from store.migrate import prepare_schema
from store.partitions import add_months, month_start, partition_name
from store.prune import STORES
from store.tables import utcnow
from tests.support.pruning import KEEP, kept, keys, past, seed

RIDEHAIL = str(Path(sys.executable).parent / "ridehail")


def prune(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``ridehail prune *args`` on the data dir's database, with servers that do not
    answer: it must not need them."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RIDEHAIL_")}
    clean.update({f"RIDEHAIL_{k.upper()}": str(v) for k, v in KEEP.items()})
    clean.update(RIDEHAIL_DATA_DIR=str(data_dir), RIDEHAIL_NATS_URL="nats://127.0.0.1:1",
                 RIDEHAIL_TEMPORAL_ADDRESS="127.0.0.1:1", **env)
    return subprocess.run([RIDEHAIL, "prune", *args], env=clean, capture_output=True,
                          text=True, timeout=120)


def _database(data_dir: Path) -> Database:
    url = f"sqlite:///{data_dir / 'ridehail.db'}"
    prepare_schema(url)
    return Database(url)


def test_prune_says_what_it_would_remove_then_removes_it(tmp_path: Path) -> None:
    db = _database(tmp_path)
    past_, kept_ = past("sqlite"), kept("sqlite")  # outbox_ids: PostgreSQL's alone, 0
    now = utcnow()
    with db.writing() as session:
        seed(session, now)
    with db.reading() as session:
        before = keys(session)

    dry = prune(tmp_path, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True and report["removed"] == past_
    assert report["total"] == sum(past_.values()) and list(report["keep_s"]) == list(STORES)
    assert report["partitions_made"] == []
    with db.reading() as session:
        assert keys(session) == before  # nothing removed

    text = prune(tmp_path)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["store", "kept", "for", "removed"]
    assert {line.split()[0]: int(line.split()[-1]) for line in lines[1:-1]} == past_
    assert lines[1].split()[:2] == ["processed_events", "7d"]
    assert lines[-1].startswith(f"removed {sum(past_.values())} rows past their lifetime")
    with db.reading() as session:
        assert keys(session) == kept_

    again = prune(tmp_path, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["removed"] == dict.fromkeys(STORES, 0)
    db.dispose()


def test_prune_refuses_lifetimes_too_short_and_a_database_without_tables(
        tmp_path: Path) -> None:
    _database(tmp_path).dispose()
    short = prune(tmp_path, "--dry-run", RIDEHAIL_IDEMPOTENCY_KEEP_S="3600")
    assert short.returncode == 2 and "RIDEHAIL_IDEMPOTENCY_KEEP_S is 3600" in short.stderr
    below = prune(tmp_path, "--json", RIDEHAIL_STREAM_KEEP_S="86400",
                  RIDEHAIL_PROCESSED_KEEP_S="86400")
    assert below.returncode == 2 and "RIDEHAIL_STREAM_KEEP_S (86400) plus 60" in below.stderr
    # a notification's lifetime is the NOTIFICATIONS stream's age limit too (0: for good)
    never = prune(tmp_path, "--dry-run", RIDEHAIL_NOTIFICATION_KEEP_S="0")
    assert never.returncode == 2 and "RIDEHAIL_NOTIFICATION_KEEP_S is 0" in never.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = prune(empty, "--json")
    assert missing.returncode == 1 and "ridehail db upgrade" in missing.stderr
    assert missing.stdout == ""


def test_prune_on_postgresql_prunes_the_claims_of_event_ids_and_makes_the_months_ahead(
        tmp_path: Path, postgres_url: str) -> None:
    prepare_schema(postgres_url)
    db = Database(postgres_url)
    with db.writing() as session:
        seed(session, utcnow())
    ahead = partition_name(add_months(month_start(utcnow()), 2))
    with db.engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {ahead}")  # not made yet: no event is in it

    dry = prune(tmp_path, "--dry-run", "--json", RIDEHAIL_DATABASE_URL=postgres_url)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["removed"] == past("postgresql")
    assert json.loads(dry.stdout)["partitions_made"] == []
    run = prune(tmp_path, "--json", RIDEHAIL_DATABASE_URL=postgres_url)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["removed"]["outbox_ids"] == 1 and report["partitions_made"] == [ahead]
    assert report["keep_s"]["outbox_ids"] == 7 * 86400
    with db.reading() as session:
        assert keys(session) == kept("postgresql")
    db.dispose()
