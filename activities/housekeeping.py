"""Housekeeping: the ``prune`` activity HousekeepingWorkflow runs, and the one run of it
``ridehail prune`` makes by hand. Both delete the rows past their lifetime from the
tables that grow with traffic (``store.prune``), with each lifetime from its
``RIDEHAIL_*_KEEP_S`` setting, and say what they removed: a log line a run (always
written, whatever the log level, since it is the record of what was deleted) and, in
the worker, the counters its ``/metrics`` serves. On PostgreSQL each run (not a dry run)
first makes the event log's partitions for this month and the next two where missing
(``store.partitions``), so a month's partition is there weeks before its first event.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.exc import OperationalError
from temporalio import activity

from infra.config import Settings
from store import prune as stores
from store.db import Database
from store.partitions import MONTHS_AHEAD, ensure_month_partitions
from store.tables import utcnow
from workflows.housekeeping import PRUNE_ACTIVITY, PruneReport, PruneRequest

log = logging.getLogger(__name__)
log.setLevel(logging.INFO)  # one line a run: what was deleted, shown without -v too


def lifetimes(settings: Settings) -> stores.Lifetimes:
    """Each store's lifetime from the settings (CONTRACT.md section 1)."""
    return stores.Lifetimes(
        keep_s={
            stores.PROCESSED_EVENTS: settings.processed_keep_s,
            stores.IDEMPOTENCY_KEYS: settings.idempotency_keep_s,
            stores.RATE_LIMIT_HITS: settings.rate_limit_keep_s,
            stores.OFFERS: settings.offer_keep_s,
            stores.NOTIFICATIONS: settings.notification_keep_s,
            stores.TRIP_METERS: settings.trip_meter_keep_s,
            stores.OUTBOX_IDS: settings.outbox_ids_keep_s,
        },
        rate_limit_window_s=settings.rate_limit_window_s,
    )


class PruneMetrics:
    """What housekeeping removed, as the worker's ``/metrics`` serves it."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.pruned = Counter(
            "ridehail_pruned_rows", "Rows housekeeping deleted past their lifetime, by store "
            "(table)", ["store"], registry=self.registry)
        self.last_run = Gauge(
            "ridehail_prune_last_run_timestamp_seconds", "When the last run of housekeeping "
            "in this process finished (Unix time)", registry=self.registry)
        self.duration = Gauge(
            "ridehail_prune_last_run_seconds", "How long the last run of housekeeping in "
            "this process took", registry=self.registry)
        for store in stores.STORES:  # every store shows, at 0 until it removes a row
            self.pruned.labels(store)

    def batch(self, store: str, removed: int) -> None:
        self.pruned.labels(store).inc(removed)

    def finished(self, report: PruneReport) -> None:
        self.last_run.set(time.time())
        self.duration.set(report.seconds)


# The worker's: one a process, as the worker is (ridehail.processes.processmetrics).
PRUNE_METRICS = PruneMetrics()


async def months_ahead(db: Database, now: datetime) -> list[str]:
    """PostgreSQL: the event log's partitions for ``now``'s month and the
    ``MONTHS_AHEAD`` after it, made where missing; their names. A lock not had in time
    (``store.partitions.LOCK_TIMEOUT_S``) leaves them to the next run, saying so: the
    default partition takes a month's rows until its partition is made."""
    if db.is_sqlite:
        return []
    try:
        return await db.write(
            lambda s: ensure_month_partitions(s.connection(), now, MONTHS_AHEAD))
    except OperationalError as e:
        log.warning("housekeeping: the event log's partitions ahead not made now (%s); "
                    "the next run makes them", e.orig)
        return []


async def prune_once(db: Database, settings: Settings, *, dry_run: bool = False,
                     batch: int = stores.BATCH,
                     progress: stores.Progress | None = None) -> PruneReport:
    """One run of housekeeping: the event log's partitions ahead (not on a dry run),
    then every store; logs what it removed, or with ``dry_run`` what it would remove,
    and returns it."""
    keep = lifetimes(settings)
    started, now = time.monotonic(), utcnow()
    made = [] if dry_run else await months_ahead(db, now)
    removed = await stores.prune(db, keep, dry_run=dry_run, now=now, batch=batch,
                                 progress=progress)
    report = PruneReport(dry_run=dry_run, removed=removed, keep_s=dict(keep.keep_s),
                         seconds=round(time.monotonic() - started, 3),
                         partitions_made=made)
    each = ", ".join(f"{store} {n}" for store, n in removed.items())
    log.info("housekeeping %s %d rows past their lifetime in %.2f s (%s)%s",
             "would remove" if dry_run else "removed", report.total, report.seconds, each,
             f"; made the event log's partitions {', '.join(made)}" if made else "")
    return report


class HousekeepingActivities:
    def __init__(self, db: Database, settings: Settings,
                 metrics: PruneMetrics = PRUNE_METRICS) -> None:
        self.db = db
        self.settings = settings
        self.metrics = metrics

    @activity.defn(name=PRUNE_ACTIVITY)
    async def prune(self, request: PruneRequest) -> PruneReport:
        """Delete the rows past their lifetime, store by store, a batch a transaction,
        counting each batch as it commits (a run cut short has still counted what it
        removed) and heartbeating after it."""

        def progress(store: str, removed: int) -> None:
            if not request.dry_run:
                self.metrics.batch(store, removed)
            activity.heartbeat(store)

        report = await prune_once(self.db, self.settings, dry_run=request.dry_run,
                                  progress=progress)
        if not request.dry_run:
            self.metrics.finished(report)
        return report
