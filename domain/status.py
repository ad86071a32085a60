"""A ride's status, as the API shows it, the read model stores it, the saga reports it
(its ``status`` query and ``RideStatus`` search attribute) and CONTRACT.md lists it.

The values are the contract's strings: a ``RideStatus`` is a ``str`` and serialises as
its value. This module imports only the standard library, so workflow code may import
it too.
"""

from __future__ import annotations

from enum import StrEnum


class RideStatus(StrEnum):
    REQUESTED = "requested"
    MATCHING = "matching"
    DRIVER_ASSIGNED = "driver_assigned"
    DRIVER_ARRIVED = "driver_arrived"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


# A ride in one of these has ended; no event changes it again.
FINAL = frozenset({RideStatus.COMPLETED, RideStatus.CANCELLED, RideStatus.FAILED})
# Waiting for a driver: counted as demand by surge pricing.
OPEN = (RideStatus.REQUESTED, RideStatus.MATCHING)
# A driver is assigned and the trip has not started: the driver may still back out.
BEFORE_TRIP = frozenset({RideStatus.DRIVER_ASSIGNED, RideStatus.DRIVER_ARRIVED})
