"""Dead letters made the way the consumer runner makes them, for tests of redrive."""

from __future__ import annotations

from nats.js import JetStreamContext

from tests.support.ridestream import ride_history


async def dead_letter(js: JetStreamContext, ride_id: str, event_type: str,
                      consumer: str = "workflow-trigger", take: bool = True) -> int:
    """Leave the ride's event of this type in the DLQ as ``consumer`` would after giving
    up on it, and (``take``) remove it from RIDES, so no consumer applies it until it is
    redriven; returns the dead letter's id."""
    [(seq, event)] = [(s, e) for s, e in await ride_history(js, ride_id) if e.type == event_type]
    if take:
        await js.delete_msg("RIDES", seq)
    ack = await js.publish(
        f"dlq.{consumer}.{event.nats_subject}", event.to_json(),
        headers={"Ridehail-Consumer": consumer, "Ridehail-Stream": "RIDES",
                 "Ridehail-Stream-Seq": str(seq), "Ridehail-Deliveries": "6",
                 "Ridehail-Error": "test: given up on",
                 "Ridehail-Original-Subject": event.nats_subject},
    )
    return int(ack.seq)
