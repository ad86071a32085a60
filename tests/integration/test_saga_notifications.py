"""Notifications, end to end: the rider is told of the driver's assignment and arrival
and of the ride's end (completed, cancelled, failed) and of a driver backing out; a
driver of offers and of losing a ride to a cancellation. Each notice is stored and
published as ``notification.sent`` on ``notifications.<user_id>.sent``, once."""

from __future__ import annotations

from typing import Any

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from sqlmodel import select

from domain.status import RideStatus
from events.envelope import parse_event
from store.tables import Notification
from tests.support.rides import (
    FARTHER,
    NEAR,
    accept,
    drive,
    driver_online,
    ended,
    offered,
    request_ride,
)
from tests.support.stack import Stack, eventually

Told = list[tuple[str, str]]  # (user, kind), oldest first


def stored(stack: Stack, ride_id: str) -> list[Notification]:
    return stack.query(
        lambda s: list(
            s.exec(
                select(Notification)
                .where(Notification.ride_id == ride_id)
                .order_by(Notification.created_at)
            )
        )
    )  # type: ignore[arg-type]


async def published(stack: Stack, user: str) -> list[tuple[str, dict[str, Any]]]:
    """(NATS subject, CloudEvent) of every notification sent to ``user``, in order."""
    sub = await stack.rt.js.pull_subscribe(
        f"notifications.{user}.>",
        stream="NOTIFICATIONS",
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=10,
            mem_storage=True,
        ),
    )
    out: list[tuple[str, dict[str, Any]]] = []
    try:
        pending = (await sub.consumer_info()).num_pending
        while len(out) < pending:
            try:
                msgs = await sub.fetch(pending - len(out), timeout=2)
            except NatsTimeoutError:
                break
            out += [(m.subject, parse_event(m.data).model_dump(mode="json")) for m in msgs]
    finally:
        await sub.unsubscribe()
    return out


async def told(stack: Stack, ride_id: str, expected: dict[str, list[str]]) -> None:
    """Wait until the ride's notices are exactly ``expected`` ({user: [kind, …]}), then
    check each is on the user's subject, once, matching the stored record."""

    async def all_stored() -> dict[str, list[str]] | None:
        got: dict[str, list[str]] = {}
        for n in stored(stack, ride_id):
            got.setdefault(n.user_id, []).append(n.kind)
        return (
            got
            if {u: sorted(k) for u, k in got.items()} == {u: sorted(k) for u, k in expected.items()}
            else None
        )

    await eventually(all_stored, f"notifications of {expected}")
    records = {n.notification_id: n for n in stored(stack, ride_id)}
    for user in expected:

        async def sent(user: str = user) -> list[tuple[str, dict[str, Any]]] | None:
            msgs = [m for m in await published(stack, user) if m[1]["data"]["ride_id"] == ride_id]
            return msgs if len(msgs) >= len(expected[user]) else None

        msgs = await eventually(sent, f"notification.sent to {user}")
        assert len(msgs) == len(expected[user])  # once each
        for subject, event in msgs:
            assert subject == f"notifications.{user}.sent"
            assert event["type"] == "notification.sent" and event["subject"] == user
            record = records[event["id"]]
            assert event["data"] == {
                "notification_id": record.notification_id,
                "user_id": user,
                "ride_id": ride_id,
                "kind": record.kind,
                "message": record.message,
            }


async def test_a_completed_ride_tells_the_rider_each_step_and_the_driver_the_offer(
    stack: Stack,
) -> None:
    await driver_online(stack, "d1", NEAR)
    ride_id = await request_ride(stack)
    await accept(stack, ride_id, "d1")
    await drive(stack, ride_id, "d1")
    await told(
        stack,
        ride_id,
        {
            "r1": ["driver_assigned", "driver_arrived", "ride_completed"],
            "d1": ["ride_offered"],
        },
    )
    completed = next(n for n in stored(stack, ride_id) if n.kind == "ride_completed")
    assert "USD" in completed.message


async def test_backing_out_and_cancelling_tell_the_ones_who_did_not_do_it(
    stack: Stack,
) -> None:
    await driver_online(stack, "d1", NEAR)
    await driver_online(stack, "d2", FARTHER)
    ride_id = await request_ride(stack)
    await accept(stack, ride_id, "d1")
    await stack.call("POST", f"/v1/rides/{ride_id}/cancel", "driver", "d1", want=202)
    await offered(stack, ride_id, "d2")
    await accept(stack, ride_id, "d2")
    await stack.call("POST", f"/v1/rides/{ride_id}/cancel", "rider", "r1", want=202)
    assert (await ended(stack, ride_id))["status"] == RideStatus.CANCELLED
    await told(
        stack,
        ride_id,
        {
            # d1 backed out: the rider hears of it, d1 is not told of their own cancellation
            "r1": ["driver_assigned", "driver_cancelled", "driver_assigned", "ride_cancelled"],
            "d1": ["ride_offered"],
            "d2": ["ride_offered", "ride_cancelled"],
        },
    )


async def test_a_failed_ride_tells_the_rider_why(stack: Stack) -> None:
    ride_id = await request_ride(stack, payment_method="card_declined")
    assert (await ended(stack, ride_id))["failure_reason"] == "payment_declined"
    await told(stack, ride_id, {"r1": ["ride_failed"]})
    [failed] = stored(stack, ride_id)
    assert "payment_declined" in failed.message
