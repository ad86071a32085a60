"""The event log read back from the outbox: a ride's events in the order written (after a
position, if asked), the whole log in batches, invalid bodies skipped and told, and the
ride's query answered from the outbox's index of aggregates."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from sqlalchemy import event

from events import catalog as c
from events import log
from events.envelope import CloudEvent, InvalidEvent, new_event
from events.outbox import stage
from store.db import Database
from store.tables import OutboxEvent, utcnow


def _ride_event(event_type: str, ride_id: str) -> CloudEvent:
    payload: c.Payload = c.OfferExpired(ride_id=ride_id, driver_id="d1", offer_id="o1")
    if event_type == "ride.completed":
        payload = c.RideCompleted(ride_id=ride_id, final_fare=Decimal("10.00"),
                                  currency="USD", distance_m=1000, duration_s=100)
    return new_event(event_type, payload, source="test", subject=ride_id)


def _database(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'ridehail.db'}")
    db.create_tables()
    return db


def test_a_rides_events_in_the_order_written(tmp_path: Path) -> None:
    db = _database(tmp_path)
    a = [_ride_event("ride.offer_expired", "ride-a") for _ in range(3)]
    b = [_ride_event("ride.offer_expired", "ride-b") for _ in range(2)]
    with db.writing() as session:
        staged = stage(session, [a[0], b[0], a[1]])
        staged += stage(session, [b[1], a[2]])
        # a rider whose id is the ride's: its notifications are not the ride's events
        session.add(OutboxEvent(event_id="n1", aggregate_id="ride-a",
                                subject="notifications.ride-a.sent", body="{}",
                                created_at=utcnow()))
        # a body no longer valid: skipped, and told
        session.add(OutboxEvent(event_id="bad", aggregate_id="ride-a",
                                subject="rides.ride-a.offer_expired", body="{}",
                                created_at=utcnow()))
    positions = {s.event_id: s.position for s in staged}
    invalid: list[tuple[int, str]] = []

    def told(position: int, subject: str, error: InvalidEvent) -> None:
        invalid.append((position, subject))

    with db.reading() as session:
        history = log.ride_log(session, "ride-a", on_invalid=told)
        assert [(p, e.id) for p, e in history] == [(positions[e.id], e.id) for e in a]
        assert [e.id for _, e in log.ride_log(session, "ride-a", positions[a[1].id])] == \
            [a[2].id]
        assert not log.ended_in_log(session, "ride-a")
        assert log.position_of(session, b[1].id) == positions[b[1].id]
        assert log.position_of(session, "nowhere") is None
        assert log.count(session) == 6  # the five and the invalid one; no notification
    assert [subject for _, subject in invalid] == ["rides.ride-a.offer_expired"]

    with db.writing() as session:
        stage(session, [_ride_event("ride.completed", "ride-a")])
    with db.reading() as session:
        assert log.ended_in_log(session, "ride-a")
        assert not log.ended_in_log(session, "ride-b")
    db.dispose()


def test_the_whole_log_in_batches_from_where_the_last_ended(tmp_path: Path) -> None:
    db = _database(tmp_path)
    events = [_ride_event("ride.offer_expired", f"ride-{i % 3}") for i in range(7)]
    with db.writing() as session:
        staged = stage(session, events)
        last = staged[4].position

    async def batches(up_to: int | None) -> list[list[str]]:
        return [[e.id for _, e in batch]
                async for batch in log.replay(db, up_to=up_to, batch=3)]

    assert asyncio.run(batches(None)) == [[e.id for e in events[i:i + 3]]
                                          for i in range(0, 7, 3)]
    assert asyncio.run(batches(last)) == [[e.id for e in events[:3]],
                                          [e.id for e in events[3:5]]]
    db.dispose()


def test_a_rides_events_are_found_by_the_index_of_aggregates(tmp_path: Path) -> None:
    """However long the log, a ride's events are read from the outbox's index of
    aggregates (a ride has a few dozen rows): no index of its own is needed."""
    db = _database(tmp_path)
    seen: list[tuple[str, object]] = []

    @event.listens_for(db.engine, "before_cursor_execute")
    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "FROM outbox" in statement:
            seen.append((statement, parameters))

    with db.reading() as session:
        log.ride_log(session, "ride-a", 3)
    statement, parameters = seen[-1]
    raw = db.engine.raw_connection()
    try:
        plan = raw.cursor().execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
    finally:
        raw.close()
    assert any("ix_outbox_aggregate_id" in str(step) for step in plan), plan
    db.dispose()


def test_the_position_header() -> None:
    assert log.header_position({"Ridehail-Position": "42"}) == 42
    assert log.header_position({"Nats-Msg-Id": "x"}) is None
    assert log.header_position(None) is None
    assert log.header_position({"Ridehail-Position": "not a number"}) is None
