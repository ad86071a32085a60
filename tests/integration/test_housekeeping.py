"""Housekeeping (issue 29, items 3 and 6): every table that grows with traffic keeps a
row for its lifetime and no longer, on SQLite and PostgreSQL.

Pruning removes only the rows past their lifetime, store by store, and never a money
record or the event log; a dry run removes nothing and counts the same; a run cut short
loses nothing and the next carries on. Under a live load it keeps everything a
redelivery needs: a redelivered event whose record is recent is still a no-op after an
unrelated old record went; an Idempotency-Key inside its lifetime still answers the
first response. The worker schedules it (``ridehail-housekeeping``), and one run of the
schedule's workflow prunes. On PostgreSQL a run also prunes the claims of event ids
(``outbox_ids``) and makes the event log's partitions for the coming months; on SQLite,
which has neither, it reports 0 and none."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import Session, col, func, select
from temporalio.client import ScheduleActionStartWorkflow, ScheduleOverlapPolicy

from activities.housekeeping import PRUNE_METRICS, lifetimes, prune_once
from events.envelope import parse_event
from events.lag import all_caught_up
from infra.config import Settings
from ridehail.ops.replay import replayer
from store.db import Database
from store.migrate import prepare_schema
from store.partitions import add_months, month_start, partition_name, partitions
from store.prune import STORES, prune
from store.tables import IdempotencyKey, Notification, OutboxEvent, ProcessedEvent, utcnow
from tests.support.pruning import DAY, KEEP, kept, keys, past, seed
from tests.support.rides import DROPOFF, FARTHEST, NEAR, PICKUP, accept, drive, driver_online
from tests.support.rides import request_ride as book
from tests.support.stack import Stack, eventually
from workflows.housekeeping import SCHEDULE_ID, WORKFLOW_TYPE


class Killed(Exception):
    """The process running housekeeping, killed."""


def _settings(**update: Any) -> Settings:
    return Settings(**{**KEEP, **update})


@pytest.fixture
async def seeded(database_url: str) -> Any:
    """A ridehail database with rows in and past their lifetime, and when ``now`` is."""
    prepare_schema(database_url)
    db = Database(database_url)
    now = utcnow()
    await db.write(lambda s: seed(s, now))
    try:
        yield db, now
    finally:
        db.dispose()


async def test_pruning_removes_only_the_rows_past_their_lifetime(seeded: Any) -> None:
    db, now = seeded
    dialect = db.engine.dialect.name
    keep = lifetimes(_settings())
    before = await db.read(keys)
    dry = await prune(db, keep, dry_run=True, now=now)
    assert dry == past(dialect)
    assert await db.read(keys) == before  # a dry run removes nothing
    removed = await prune(db, keep, now=now, batch=1)  # a row a transaction
    assert removed == dry == past(dialect)
    assert await db.read(keys) == kept(dialect)
    again = await prune(db, keep, now=now)  # idempotent: nothing more to do
    assert again == dict.fromkeys(STORES, 0)


async def test_a_run_cut_short_loses_nothing_and_the_next_carries_on(seeded: Any) -> None:
    db, now = seeded
    keep = lifetimes(_settings())

    def killed(store: str, removed: int) -> None:
        raise Killed("killed after the first batch")

    with pytest.raises(Killed):
        await prune(db, keep, now=now, batch=1, progress=killed)
    first = await db.read(lambda s: s.exec(select(func.count()).select_from(ProcessedEvent)).one())
    assert first == 2  # one record went, in its own transaction; the other is still there
    rest = await prune(db, keep, now=now, batch=1)
    dialect = db.engine.dialect.name
    assert rest == {**past(dialect), "processed_events": 1}
    assert await db.read(keys) == kept(dialect)


async def test_a_run_makes_the_event_logs_months_ahead_on_postgresql(seeded: Any) -> None:
    """The months ahead that are missing (here: dropped) are made by a run, and only by
    one that is not a dry run; on SQLite there are none to make."""
    db, _ = seeded
    settings = _settings()
    if db.is_sqlite:
        report = await prune_once(db, settings)
        assert report.partitions_made == [] and report.removed["outbox_ids"] == 0
        return
    this = month_start(utcnow())
    ahead = [partition_name(add_months(this, k)) for k in (1, 2)]
    with db.engine.begin() as conn:
        for name in ahead:  # empty: no event is written months ahead
            conn.execute(text(f"DROP TABLE {name}"))
    assert (await prune_once(db, settings, dry_run=True)).partitions_made == []
    report = await prune_once(db, settings)
    assert report.partitions_made == ahead and report.removed["outbox_ids"] == 1
    with db.engine.connect() as conn:
        assert set(ahead) <= set(partitions(conn))
    assert (await prune_once(db, settings)).partitions_made == []


async def test_a_run_prunes_when_the_months_ahead_must_wait(seeded: Any) -> None:
    """A partition ahead that cannot be made in time (another transaction holds the
    event log's default partition) is left to the next run; the run prunes all the same."""
    db, _ = seeded
    if db.is_sqlite:
        pytest.skip("SQLite's event log has no partitions")
    name = partition_name(add_months(month_start(utcnow()), 2))
    with db.engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {name}"))
    with db.engine.connect() as holder, holder.begin():
        holder.execute(text("LOCK TABLE outbox_default IN ACCESS EXCLUSIVE MODE"))
        report = await prune_once(db, _settings())
    assert report.partitions_made == [] and report.removed == past("postgresql")
    assert (await prune_once(db, _settings())).partitions_made == [name]


# --- on a live system ------------------------------------------------------------------


def _old_records(n: int) -> Callable[[Session], None]:
    def write(session: Session) -> None:
        at = utcnow() - 8 * DAY
        session.add_all(ProcessedEvent(consumer="ride-projector", event_id=f"old-{i}",
                                       processed_at=at) for i in range(n))
    return write


def _recent_records(session: Session) -> set[tuple[str, str]]:
    q = select(ProcessedEvent).where(col(ProcessedEvent.event_id).not_like("old-%"))
    return {(r.consumer, r.event_id) for r in session.exec(q)}


class Traffic:
    """Drivers reporting where they are, each report an event and its records, until
    stopped; counts the reports made."""

    def __init__(self, stack: Stack) -> None:
        self.stack, self.made, self.stop = stack, 0, asyncio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            for driver in ("load-1", "load-2"):
                await self.stack.call(
                    "POST", "/v1/drivers/me/location", "driver", driver, want=202,
                    json={**FARTHEST, "lng": FARTHEST["lng"] + self.made / 1e5})
                self.made += 1

    async def reports(self, n: int) -> None:
        """Wait until ``n`` more reports are made."""
        target = self.made + n

        async def made() -> bool:
            return self.made >= target

        await eventually(made, f"{n} location reports")


async def _redeliver(stack: Stack, ride_id: str, event_type: str) -> None:
    """Publish one of the ride's events to the stream again, as a relay repeating itself
    or a redrive would (no applied header, a new message id), and wait until every
    consumer has had it."""
    row = stack.query(lambda s: s.exec(select(OutboxEvent).where(
        OutboxEvent.aggregate_id == ride_id, col(OutboxEvent.subject).endswith(
            event_type.removeprefix("ride.")))).one())
    event = parse_event(row.body.encode())
    await stack.rt.js.publish(event.nats_subject, event.to_json(),
                              headers={"Nats-Msg-Id": f"again-{event.id}"})
    await eventually(lambda: all_caught_up(stack.rt.js), "the consumers to catch up")


async def test_pruning_under_load_keeps_what_a_redelivery_needs(stack: Stack) -> None:
    await driver_online(stack, "d1", NEAR)
    ride_id = await book(stack, "r1")
    await accept(stack, ride_id, "d1")
    captured = (await drive(stack, ride_id, "d1"))["payment"]["captured"]
    for driver in ("load-1", "load-2"):
        await driver_online(stack, driver, FARTHEST)
    await eventually(lambda: all_caught_up(stack.rt.js), "the consumers to catch up")
    await stack.db.write(_old_records(2500))  # unrelated, a week and a day old
    recent = stack.query(_recent_records)

    traffic = Traffic(stack)
    load = asyncio.create_task(traffic.run())
    try:
        await traffic.reports(4)
        during = traffic.made
        report = await prune_once(stack.db, stack.settings, batch=100)
        await traffic.reports(4)
    finally:
        traffic.stop.set()
        await load
    assert report.removed["processed_events"] == 2500 and traffic.made > during
    after = stack.query(_recent_records)
    assert recent <= after  # every recent record survived, and the load's were added
    # a redelivered ride.payment_captured is a no-op: applied again, it would count the
    # money captured twice in the ride's read model
    await _redeliver(stack, ride_id, "ride.payment_captured")
    ride = await stack.ride(ride_id, "r1")
    assert ride["status"] == "completed" and ride["payment"]["captured"] == captured


async def test_an_idempotency_key_inside_its_lifetime_answers_the_first_response(
        api: Stack) -> None:
    headers = {**api.auth("rider", "ann"), "Idempotency-Key": "k-1"}
    body = {"pickup": PICKUP, "dropoff": DROPOFF}
    first = await api.http.post("/v1/rides", json=body, headers=headers)
    assert first.status_code == 202, first.text
    keep = api.settings.idempotency_keep_s

    def age(session: Session) -> None:
        key = session.get(IdempotencyKey, ("ann", "k-1"))
        assert key is not None
        key.created_at = utcnow() - timedelta(seconds=keep - 3600)  # an hour left
        session.add(key)
        session.add(IdempotencyKey(rider_id="bob", key="k-old", request_hash="h",
                                   ride_id="x", created_at=utcnow() - timedelta(
                                       seconds=keep + 60)))

    await api.db.write(age)
    report = await prune_once(api.db, api.settings)
    assert report.removed["idempotency_keys"] == 1
    again = await api.http.post("/v1/rides", json=body, headers=headers)
    assert again.status_code == 202, again.text
    assert again.json()["ride_id"] == first.json()["ride_id"]
    assert again.headers.get("idempotent-replayed") == "true"
    assert api.query(lambda s: s.get(IdempotencyKey, ("bob", "k-old"))) is None


async def test_the_worker_schedules_housekeeping_and_a_run_prunes(stack: Stack) -> None:
    handle = stack.temporal.get_schedule_handle(SCHEDULE_ID)
    described = await handle.describe()
    action = described.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert action.workflow == WORKFLOW_TYPE and action.task_queue == "rides"
    [interval] = described.schedule.spec.intervals
    assert interval.every == timedelta(seconds=stack.settings.prune_every_s)
    assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP

    def old_rows(session: Session) -> None:
        at = utcnow() - 31 * DAY
        session.add(Notification(notification_id="n-old", user_id="r1", kind="k",
                                 message="m", created_at=at))
        session.add(ProcessedEvent(consumer="notifier", event_id="p-old", processed_at=at))

    await stack.db.write(old_rows)
    counted = PRUNE_METRICS.registry.get_sample_value(
        "ridehail_pruned_rows_total", {"store": "notifications"}) or 0
    before = len(described.info.recent_actions)
    await handle.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)

    async def ran() -> Any:
        actions = (await handle.describe()).info.recent_actions
        return actions[-1] if len(actions) > before else None

    started = (await eventually(ran, "the schedule to start a run")).action
    run = stack.temporal.get_workflow_handle(started.workflow_id,
                                             run_id=started.first_execution_run_id)
    result = await asyncio.wait_for(run.result(), 60)
    assert result["removed"]["notifications"] >= 1 and not result["dry_run"]
    assert stack.query(lambda s: s.get(Notification, "n-old")) is None
    assert stack.query(lambda s: s.exec(select(ProcessedEvent).where(
        ProcessedEvent.event_id == "p-old")).first()) is None
    assert (PRUNE_METRICS.registry.get_sample_value(
        "ridehail_pruned_rows_total", {"store": "notifications"}) or 0) >= counted + 1
    assert (await run.describe()).workflow_type == WORKFLOW_TYPE
    # its history replays against the workflow as the worker and `ridehail replay` run it
    await replayer().replay_workflow(await run.fetch_history())
