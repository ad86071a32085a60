"""``ridehail audit``: check the invariants of CONTRACT.md section 7.

1. No driver is bound to two unfinished rides.
2. Per ride: at most one capture; captured ≤ authorized; a voided hold has no capture;
   refunds ≤ captured.
3. Every ride whose saga ended has its read-model status equal to the saga's outcome.
4. The outbox has no event older than a minute that is unpublished.
5. Every ride event in the event log (the outbox, which keeps every event committed)
   has a schema-valid payload for its type and version.
6. No ride is left unfinished past its matching deadline (plus a margin) without a
   running workflow.
7. No dead letter is waiting in the DLQ.
8. Every cancellation fee was charged for a cancel the rider asked for after the free
   window, judged by the times of the events.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import timedelta

from nats.js import JetStreamContext
from sqlalchemy import func
from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from domain.status import FINAL
from events import log
from events.dlq import list_dead_letters
from events.envelope import CloudEvent, InvalidEvent
from infra.config import Settings
from store.db import Database
from store.tables import LedgerEntry, OutboxEvent, Ride, utcnow
from workflows.contract import WORKFLOW_TYPE

OUTBOX_GRACE = timedelta(minutes=1)
# A ride may stay unfinished this long past its matching deadline before a missing
# workflow counts as lost (the trigger may be catching up after an outage).
STUCK_MARGIN = timedelta(minutes=1)
STUCK_CHECKED_AT_MOST = 500
MAX_LISTED = 20  # violations listed per check; the count is always complete


@dataclass
class Check:
    number: int
    name: str
    violations: list[str] = field(default_factory=list)
    count: int = 0
    checked: int = 0

    @property
    def ok(self) -> bool:
        return self.count == 0

    def fail(self, message: str) -> None:
        self.count += 1
        if len(self.violations) < MAX_LISTED:
            self.violations.append(message)


@dataclass
class AuditReport:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "checks": [{**asdict(c), "ok": c.ok} for c in self.checks],
        }


def check_drivers(session: Session) -> Check:
    check = Check(1, "no driver is bound to two unfinished rides")
    rows = session.exec(
        select(Ride.driver_id, func.count())
        .where(col(Ride.driver_id).is_not(None))
        .where(col(Ride.status).not_in(FINAL))
        .group_by(col(Ride.driver_id))
    ).all()
    check.checked = len(rows)
    for driver_id, n in rows:
        if n > 1:
            check.fail(f"driver {driver_id} is bound to {n} unfinished rides")
    return check


def check_ledger(session: Session) -> Check:
    check = Check(2, "per ride: one capture at most, captured ≤ authorized, "
                     "no capture after a void, refunds ≤ captured")
    by_ride: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for entry in session.exec(select(LedgerEntry)):
        by_ride[entry.ride_id][entry.kind].append(entry.amount_cents)
    check.checked = len(by_ride)
    for ride_id, kinds in sorted(by_ride.items()):
        captures, authorized = kinds["capture"], sum(kinds["authorize"])
        captured, refunded = sum(captures), sum(kinds["refund"])
        if len(captures) > 1:
            check.fail(f"ride {ride_id}: {len(captures)} captures")
        if captured > authorized:
            check.fail(f"ride {ride_id}: captured {captured} > authorized {authorized}")
        if kinds["void"] and captures:
            check.fail(f"ride {ride_id}: the hold was voided and also captured")
        if refunded > captured:
            check.fail(f"ride {ride_id}: refunded {refunded} > captured {captured}")
    return check


async def check_outcomes(db: Database, temporal: Client) -> Check:
    check = Check(3, "every ended saga's outcome equals the ride's read-model status")
    outcomes: dict[str, str] = {}
    query = f"WorkflowType='{WORKFLOW_TYPE}' AND ExecutionStatus='Completed'"
    async for wf in temporal.list_workflows(query):
        status = None
        for pair in wf.typed_search_attributes:
            if pair.key.name == "RideStatus":
                status = pair.value
        if wf.id.startswith("ride-") and isinstance(status, str):
            outcomes[wf.id.removeprefix("ride-")] = status
    ids = list(outcomes)

    def statuses(session: Session) -> dict[str, str]:
        found: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = select(Ride.ride_id, Ride.status).where(col(Ride.ride_id).in_(chunk))
            found.update(dict(session.exec(q).all()))
        return found

    read_model = await db.read(statuses)
    # A workflow whose ride is not in this database is not one of its rides (another
    # deployment sharing the namespace, or a database started afresh): not checked.
    for ride_id, outcome in sorted(outcomes.items()):
        seen = read_model.get(ride_id)
        if seen is None:
            continue
        check.checked += 1
        if seen != outcome:
            check.fail(f"ride {ride_id}: saga ended {outcome}, read model says {seen}")
    return check


def check_outbox(session: Session) -> Check:
    check = Check(4, "no outbox event older than a minute is unpublished")
    cutoff = utcnow() - OUTBOX_GRACE
    check.checked = session.exec(select(func.count()).select_from(OutboxEvent)).one()
    stale = session.exec(
        select(OutboxEvent)
        .where(col(OutboxEvent.published_at).is_(None))
        .where(col(OutboxEvent.created_at) < cutoff)
        .order_by(col(OutboxEvent.position))
    )
    for row in stale:
        check.fail(f"event {row.event_id} on {row.subject} unpublished since "
                   f"{row.created_at.isoformat()}")
    return check


# The events check 8 judges by: the rest of the log is read and let go.
FEE_EVENT_TYPES = frozenset({"ride.driver_assigned", "ride.cancellation_requested",
                             "ride.payment_captured"})


async def check_event_log(db: Database, seen: list[CloudEvent] | None = None) -> Check:
    """Check 5, over every ride event of the event log, read in batches; the valid
    events check 8 needs are appended to ``seen``, in log order."""
    check = Check(5, "every ride event in the event log has a schema-valid payload")

    def invalid(position: int, subject: str, error: InvalidEvent) -> None:
        check.checked += 1
        check.fail(f"event log position {position} ({subject}): {error}")

    async for batch in log.replay(db, families=(log.RIDES,), on_invalid=invalid):
        check.checked += len(batch)
        if seen is not None:
            seen.extend(event for _, event in batch if event.type in FEE_EVENT_TYPES)
    return check


async def check_stuck(db: Database, temporal: Client, matching_deadline_s: float) -> Check:
    check = Check(6, "no unfinished ride past its matching deadline is without a running "
                     "workflow")
    cutoff = utcnow() - timedelta(seconds=matching_deadline_s) - STUCK_MARGIN
    rides = await db.read(lambda s: list(s.exec(
        select(Ride.ride_id, Ride.status).where(col(Ride.status).not_in(FINAL))
        .where(col(Ride.created_at) < cutoff).order_by(col(Ride.created_at))
        .limit(STUCK_CHECKED_AT_MOST)).all()))
    for ride_id, status in rides:
        check.checked += 1
        try:
            desc = await temporal.get_workflow_handle(f"ride-{ride_id}").describe()
        except RPCError as e:
            if e.status != RPCStatusCode.NOT_FOUND:
                raise
            check.fail(f"ride {ride_id} is {status} and has no workflow")
            continue
        if desc.status != WorkflowExecutionStatus.RUNNING:
            name = desc.status.name.lower() if desc.status else "unknown"
            check.fail(f"ride {ride_id} is {status} but its workflow is {name}")
    return check


async def check_dead_letters(js: JetStreamContext) -> Check:
    check = Check(7, "no dead letter is waiting (read each, then `ridehail dlq redrive ID` "
                     "or `ridehail dlq discard ID`)")
    for letter in await list_dead_letters(js):
        check.checked += 1
        check.fail(f"dead letter {letter.id}: {letter.consumer} on {letter.original_subject}"
                   f" ({letter.event_type or 'not an event'}): {letter.error[:200]}")
    return check


def check_fees(events: list[CloudEvent], free_cancel_s: float) -> Check:
    """A fee is due only for a rider's cancel made more than the free window after the
    driver's assignment, both as the events' times say."""
    check = Check(8, "every cancellation fee was charged for a cancel after the free window")
    assigned: dict[str, CloudEvent] = {}
    cancels: dict[str, list[CloudEvent]] = defaultdict(list)
    for e in events:  # in log order, so a rematch's assignment replaces the first
        if e.type == "ride.driver_assigned":
            assigned[e.subject] = e
        elif e.type == "ride.cancellation_requested" and e.data.get("by_role") == "rider":
            cancels[e.subject].append(e)
        elif e.type == "ride.payment_captured" and e.data.get("purpose") == "cancellation_fee":
            check.checked += 1
            got = assigned.get(e.subject)
            asked = next((c for c in cancels[e.subject]
                          if got is not None and c.time >= got.time), None)
            if got is None or asked is None:
                check.fail(f"ride {e.subject}: a fee of {e.data.get('amount')} without a "
                           "rider's cancel after an assignment")
                continue
            after = (asked.time - got.time).total_seconds()
            if after <= free_cancel_s:
                check.fail(f"ride {e.subject}: a fee of {e.data.get('amount')} for a cancel "
                           f"{after:.1f}s after the assignment (free window "
                           f"{free_cancel_s:g}s)")
    return check


async def run_audit(db: Database, js: JetStreamContext, temporal: Client,
                    settings: Settings | None = None) -> AuditReport:
    settings = settings or Settings()
    events: list[CloudEvent] = []
    first = await db.read(check_drivers)
    second = await db.read(check_ledger)
    third = await check_outcomes(db, temporal)
    fourth = await db.read(check_outbox)
    fifth = await check_event_log(db, events)
    sixth = await check_stuck(db, temporal, settings.matching_deadline_s)
    seventh = await check_dead_letters(js)
    eighth = check_fees(events, settings.free_cancel_s)
    return AuditReport([first, second, third, fourth, fifth, sixth, seventh, eighth])
