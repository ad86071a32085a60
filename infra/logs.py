"""How every ridehail process logs: to stderr, as text or as one JSON object a line
(``RIDEHAIL_LOG_FORMAT=json``), with ``-v`` adding the INFO lines (the API's access log,
components starting and stopping) and third-party set-up chatter kept out.

A line about a ride carries its id: given as ``extra={"ride_id": …}``, or taken from the
ride being handled (``ride_context``: a consumer's event, an activity of the ride's
workflow); with tracing on, it carries the current trace id too."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime

from infra.telemetry import current_trace_id

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that say how they set themselves up (alembic's "setup plugin …" lines on
# every migration), not what ridehail does: warnings only, even under -v.
# ``ridehail db upgrade`` says itself which revision the database is at.
QUIET = ("alembic",)
# The ride the code running now works for (a consumer's event, an activity's workflow).
_current_ride: ContextVar[str | None] = ContextVar("ridehail_ride", default=None)


@contextlib.contextmanager
def ride_context(ride_id: str | None) -> Iterator[None]:
    """Log lines written inside carry ``ride_id`` (unless they name another)."""
    token = _current_ride.set(ride_id)
    try:
        yield
    finally:
        _current_ride.reset(token)


def ride_and_trace(record: logging.LogRecord) -> tuple[str | None, str | None]:
    """The ride a record is about and the trace it was written in, where known."""
    return getattr(record, "ride_id", None) or _current_ride.get(), current_trace_id()


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, then ``ride=<id> trace=<id>`` where the record has them."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ride_id, trace_id = ride_and_trace(record)
        tags = ([f"ride={ride_id}"] if ride_id else []) + (
            [f"trace={trace_id}"] if trace_id else [])
        if not tags:
            return line
        first, newline, rest = line.partition("\n")  # after the message, not the traceback
        return f"{first} [{' '.join(tags)}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the ride's id where the
    record is about one (``extra={"ride_id": …}`` or ``ride_context``), the trace id
    when tracing is on, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ride_id, trace_id = ride_and_trace(record)
        if ride_id:
            doc["ride_id"] = ride_id
        if trace_id:
            doc["trace_id"] = trace_id
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure_logging(verbose: bool, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


def ride_extra(event_type: str, subject: str) -> dict[str, str]:
    """``extra`` for a log record about an event: the ride's id when it is a ride's."""
    return {"ride_id": subject} if event_type.startswith("ride.") else {}
