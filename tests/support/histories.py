"""Reading the recorded workflow histories in tests/histories/."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.contrib.pydantic import pydantic_data_converter

from ridehail.ops.replay import load_history


def recorded(path: Path) -> list[HistoryEvent]:
    return list(load_history(path).events)


def patches(events: Iterable[HistoryEvent]) -> list[str]:
    """The ids of the patches a history's markers record, in order."""
    converter = pydantic_data_converter.payload_converter
    return [
        converter.from_payload(e.marker_recorded_event_attributes.details["patch-data"]
                               .payloads[0], dict[str, Any])["id"]
        for e in events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]
