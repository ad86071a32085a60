"""How every ridehail process logs: to stderr, as text or as one JSON object a line
(``RIDEHAIL_LOG_FORMAT=json``), with ``-v`` adding the INFO lines (the API's access log,
components starting and stopping) and third-party set-up chatter kept out."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that say how they set themselves up (alembic's "setup plugin …" lines on
# every migration), not what ridehail does: warnings only, even under -v.
# ``ridehail db upgrade`` says itself which revision the database is at.
QUIET = ("alembic",)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the ride's id where the
    record carries one (``extra={"ride_id": …}``), and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ride_id = getattr(record, "ride_id", None)
        if ride_id:
            doc["ride_id"] = ride_id
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure_logging(verbose: bool, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json"
                         else logging.Formatter(TEXT_FORMAT))
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
