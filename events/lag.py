"""How far behind each consumer group is: messages not yet delivered (pending) and
delivered but not yet acknowledged (ack pending), summed over the group's durables."""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

# consumer group -> stream it reads
GROUPS = {
    "workflow-trigger": "RIDES",
    "ride-projector": "RIDES",
    "notifier": "RIDES",
    "driver-projector": "DRIVERS",
}


@dataclass(frozen=True)
class Lag:
    pending: int
    ack_pending: int

    @property
    def idle(self) -> bool:
        return self.pending == 0 and self.ack_pending == 0


async def consumer_lag(js: JetStreamContext) -> dict[str, Lag]:
    lags: dict[str, Lag] = {}
    for stream in sorted(set(GROUPS.values())):
        try:
            consumers = await js.consumers_info(stream)
        except NotFoundError:
            continue
        for info in consumers:
            group = info.name.rsplit("-p", 1)[0] if "-p" in info.name else info.name
            if group not in GROUPS:
                continue
            prev = lags.get(group, Lag(0, 0))
            lags[group] = Lag(prev.pending + (info.num_pending or 0),
                              prev.ack_pending + (info.num_ack_pending or 0))
    return lags


async def all_caught_up(js: JetStreamContext) -> bool:
    lags = await consumer_lag(js)
    return bool(lags) and all(lag.idle for lag in lags.values())
