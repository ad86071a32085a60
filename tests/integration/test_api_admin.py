"""The operators' routes: dead letters as the consumers leave them, and redriving one."""

from __future__ import annotations

from typing import Any

from tests.support.stack import Stack, eventually


async def test_dead_letters_listed_and_redriven(stack: Stack) -> None:
    empty = await stack.call("GET", "/v1/admin/dlq", "admin", "root", want=200)
    assert empty.json() == {"dead_letters": []}

    # A message on RIDES that is no event at all: every consumer reading its type gives up on it
    # at once and dead-letters it.
    await stack.rt.js.publish("rides.not-an-event.requested", b"{not json",
                              headers={"Nats-Msg-Id": "garbage-1"})

    async def letters() -> list[dict[str, Any]]:
        r = await stack.call("GET", "/v1/admin/dlq", "admin", "root", want=200)
        return list(r.json()["dead_letters"])

    found = await eventually(letters, "the garbage to be dead-lettered")
    letter = found[0]
    assert letter["original_subject"] == "rides.not-an-event.requested"
    assert letter["original_stream"] == "RIDES" and letter["original_seq"] > 0
    assert letter["consumer"] and letter["error"] and letter["deliveries"] >= 1
    assert letter["event_id"] is None and letter["event"] is None  # not an event

    r = await stack.call("POST", f"/v1/admin/dlq/{letter['id']}/redrive", "admin", "root",
                         want=202)
    assert r.json() == {"id": letter["id"], "original_subject": letter["original_subject"],
                        "event_id": None}
    assert letter["id"] not in {x["id"] for x in await letters()}
    # once redriven it is gone: a second redrive finds nothing
    r = await stack.call("POST", f"/v1/admin/dlq/{letter['id']}/redrive", "admin", "root",
                         want=404)
    assert r.headers["content-type"].startswith("application/problem+json")
    await stack.call("POST", "/v1/admin/dlq/999999/redrive", "admin", "root", want=404)
    limited = await stack.call("GET", "/v1/admin/dlq?limit=1", "admin", "root", want=200)
    assert len(limited.json()["dead_letters"]) <= 1
