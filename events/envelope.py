"""The CloudEvents 1.0 envelope (structured JSON) and the mapping to NATS subjects."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from events.catalog import CATALOG, UPCASTERS, Payload, current_version, schema_id

# Partition count of the RIDES and DRIVERS streams (see events.streams).
PARTITIONS = 8
# A message header set by the process that wrote the event when it also applied it to
# the read models in the same transaction (events.projection.project_inline): the
# projectors then have nothing to look up.
APPLIED_HEADER = "Ridehail-Applied"
# A message header set by the outbox's publisher: the event's position in the event log
# (the outbox row's ``position``; events.log), which a ride's live stream gives its
# clients as each event's id.
POSITION_HEADER = "Ridehail-Position"
_STREAM_PREFIX = {"ride": "rides", "driver": "drivers", "notification": "notifications"}


class InvalidEvent(ValueError):
    """A message that is not a valid ridehail CloudEvent; it goes straight to the DLQ."""


class CloudEvent(BaseModel):
    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str
    subject: str = Field(min_length=1, pattern=r"^[^.*>\s]+$")
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    dataversion: int = Field(ge=1)
    # the ``$id`` of the payload's schema (events/schemas/); absent from older events
    dataschema: str | None = None
    data: dict[str, Any]

    @property
    def nats_subject(self) -> str:
        """``rides.<ride_id>.<name>`` for ``ride.<name>``, and so on."""
        family, _, name = self.type.partition(".")
        return f"{_STREAM_PREFIX[family]}.{self.subject}.{name}"

    def payload(self) -> Payload:
        """The data as the current version's model, upcast from an older version."""
        return parse_payload(self.type, self.dataversion, self.data)

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


def new_event(
    event_type: str,
    data: Payload,
    *,
    source: str,
    subject: str,
    event_id: str | None = None,
    time: datetime | None = None,
) -> CloudEvent:
    """A CloudEvent of the type's current version, validated against the catalog."""
    model = CATALOG[event_type][current_version(event_type)]
    if not isinstance(data, model):
        raise TypeError(f"{event_type} takes {model.__name__}, not {type(data).__name__}")
    return CloudEvent(
        id=event_id or str(uuid.uuid4()),
        source=source,
        type=event_type,
        subject=subject,
        time=time or datetime.now(UTC),
        dataversion=current_version(event_type),
        dataschema=schema_id(event_type, current_version(event_type)),
        data=data.model_dump(mode="json"),
    )


def derived_id(*parts: str) -> str:
    """A stable event id from the things that make the event unique (e.g. workflow + step),
    so a retried activity republishes the same id and JetStream drops the copy."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "ridehail:" + "/".join(parts)))


def parse_payload(event_type: str, version: int, data: dict[str, Any]) -> Payload:
    """Validate ``data`` as ``version`` of the type, then upcast it step by step to the
    current version, so consumers only ever handle the current model."""
    versions = CATALOG.get(event_type)
    if versions is None:
        raise InvalidEvent(f"unknown event type {event_type!r}")
    if version not in versions:
        raise InvalidEvent(f"{event_type} has no version {version} (known: {sorted(versions)})")
    try:
        payload = versions[version].model_validate(data)
        while version < current_version(event_type):
            data = UPCASTERS[(event_type, version)](payload.model_dump(mode="json"))
            version += 1
            payload = versions[version].model_validate(data)
    except ValidationError as e:
        raise InvalidEvent(f"{event_type} v{version} payload is invalid: {e}") from e
    return payload


def parse_event(body: bytes) -> CloudEvent:
    """Validate a message body as a CloudEvent with a catalogued, valid payload."""
    try:
        event = CloudEvent.model_validate_json(body)
    except ValidationError as e:
        raise InvalidEvent(f"not a ridehail CloudEvent: {e}") from e
    event.payload()
    return event


def logical_subject(stored: str) -> str:
    """``rides.3.<id>.<name>`` (as partitioned in the stream) back to ``rides.<id>.<name>``."""
    parts = stored.split(".")
    if parts[0] in ("rides", "drivers") and len(parts) == 4 and parts[1].isdigit():
        return ".".join([parts[0], parts[2], parts[3]])
    return stored
