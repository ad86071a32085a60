"""Which failures of a consumer's handler are the infrastructure's, and which the
message's own.

A transient failure (Temporal unavailable or slow, the database unreachable or locked,
a NATS request without an answer) says nothing about the message: it is retried for as
long as it lasts and never dead-lettered. A poison message (undecodable, schema-invalid,
of an unknown type or version, or refused by its handler with ``PermanentError``) can
never succeed and goes to the DLQ. Anything else is a failure of the handler that is
retried a few times, then dead-lettered for an operator to read.
"""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors
import sqlalchemy.exc
from temporalio.client import RPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

# Temporal answers these while it is down, overloaded or failing over.
TRANSIENT_RPC = frozenset({
    RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.ABORTED, RPCStatusCode.CANCELLED,
    RPCStatusCode.UNKNOWN, RPCStatusCode.INTERNAL,
})


class PermanentError(Exception):
    """A handler's verdict that this message can never be handled: dead-letter it now."""


def _transient_one(e: BaseException) -> bool:
    if isinstance(e, RPCError):
        return e.status in TRANSIENT_RPC
    if isinstance(e, RPCTimeoutOrCancelledError):
        return True
    if isinstance(e, sqlalchemy.exc.DBAPIError):
        # connection lost, server gone, database locked, serialisation failure
        return e.connection_invalidated or isinstance(
            e, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError)
    if isinstance(e, sqlalchemy.exc.DisconnectionError | sqlalchemy.exc.TimeoutError):
        return True
    if isinstance(e, nats.js.errors.ServiceUnavailableError):
        return True
    if isinstance(e, nats.errors.TimeoutError | nats.errors.ConnectionClosedError
                  | nats.errors.NoRespondersError | nats.errors.StaleConnectionError
                  | nats.errors.OutboundBufferLimitError | nats.errors.ConnectionReconnectingError
                  | nats.errors.ConnectionDrainingError):
        return True
    return isinstance(e, OSError | asyncio.TimeoutError)


def is_transient(e: BaseException) -> bool:
    """Whether the failure is the infrastructure's (looking through wrapped causes)."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, PermanentError):
            return False
        if _transient_one(cur):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:500].replace("\n", " ")
