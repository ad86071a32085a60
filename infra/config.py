"""Settings, read from ``RIDEHAIL_*`` environment variables (CONTRACT.md section 1)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypedDict
from urllib.parse import urlparse

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.area import Area, circle_of, polygon_of
from domain.pricing import MAX_TRIP_KM, MAX_TRIP_KM_LIMIT

if TYPE_CHECKING:  # imported where used, at run time
    import ssl

    from temporalio.envconfig import ClientConnectConfig

TASK_QUEUE = "rides"
JWT_SECRET_FILE = "jwt_secret"
# Where a running ``ridehail dev`` says which servers it uses (Settings.running_dev).
DEV_FILE = "dev.json"
DEV_ADDRESSES = ("nats_url", "temporal_address", "temporal_ui_port", "api_port")
# HS256 keys shorter than the hash (256 bits) are refused (RFC 7518 section 3.2).
MIN_JWT_SECRET_BYTES = 32
# Secrets that may also come from a file: RIDEHAIL_<NAME>_FILE (Docker and Kubernetes
# secrets are mounted as files). Setting both the variable and its _FILE is an error.
SECRETS = ("jwt_secret", "nats_password", "nats_token", "temporal_api_key")
# RIDES and DRIVERS keep an event at least this long (RIDEHAIL_STREAM_KEEP_S): twice the
# longest a consumer may still need a message it is retrying when nothing else is wrong
# (events.consumer: a failing handler's message is redelivered after 0.5, 1, 2, 5 and 10 s
# and dead-lettered on its sixth delivery, and a delivery lost with its process comes
# back after the 10 s ack wait: 28.5 s), so no window shorter deletes a message from
# under a consumer's retries. Outages are what the window itself must cover.
MIN_STREAM_KEEP_S = 60
# A processed-event record is kept at least RIDEHAIL_STREAM_KEEP_S and this margin: its
# event is redelivered only while the stream holds it, and the margin covers one in a
# consumer's hands as it leaves the stream (a 10 s ack wait) and the clocks of the
# machines that record and prune it.
PROCESSED_MARGIN_S = 60
# An Idempotency-Key answers a retry for at least a day, as payment APIs promise.
MIN_IDEMPOTENCY_KEEP_S = 86400
# A notification is kept at least this long (RIDEHAIL_NOTIFICATION_KEEP_S): the setting is
# the NOTIFICATIONS stream's age limit too, where 0 would mean for good, and a minute is
# the least any stream keeps a message (MIN_STREAM_KEEP_S).
MIN_NOTIFICATION_KEEP_S = 60
# Where rides may start and end (RIDEHAIL_SERVICE_AREA) unless set: New York City, 40 km
# around Times Square (every place the README, the simulator and the bench ride).
DEFAULT_SERVICE_AREA = "40.758,-73.9855,40"


class SettingsError(RuntimeError):
    """A setting is missing or wrong; the message says what to do."""


class NatsConnectOptions(TypedDict, total=False):
    """The keyword arguments of ``nats.connect`` that the RIDEHAIL_NATS_* settings give."""

    user: str
    password: str
    token: str
    user_credentials: str
    nkeys_seed: str
    tls: ssl.SSLContext


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RIDEHAIL_", extra="ignore")

    data_dir: Path = Path(".ridehail")
    database_url: str | None = None
    nats_url: str = "nats://127.0.0.1:4222"
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    temporal_ui_port: int = 8233
    jwt_secret: str | None = None
    # the longest a bearer token may live, from its iat and from now (infra.tokens); a
    # day, so a leaked token is good for a day at most
    jwt_max_ttl_s: int = Field(86400, gt=0)
    offer_timeout_s: float = Field(15, gt=0)
    matching_deadline_s: float = Field(120, gt=0)
    free_cancel_s: float = Field(120, ge=0)
    stream_replicas: int = Field(1, ge=1, le=5)
    # how long RIDES and DRIVERS keep an event (the database's outbox keeps it for good)
    stream_keep_s: float = Field(86400, allow_inf_nan=False)
    log_format: Literal["text", "json"] = "text"
    # Abuse limits (api.ratelimit, api.fanout): far above what a rider's or driver's app
    # does, well below what a script does. Counted per token subject, or per client
    # address without a valid token, in fixed windows shared by every API process.
    rate_limit_window_s: int = Field(60, ge=1, le=3600)
    rate_limit_quotes: int = Field(30, ge=1)  # POST /v1/quotes per subject per window
    rate_limit_writes: int = Field(300, ge=1)  # every other POST / PUT per subject
    rate_limit_anonymous: int = Field(600, ge=1)  # per address: bad tokens, /readyz
    sse_streams_per_subject: int = Field(8, ge=1)  # open live streams, per API process
    # NATS credentials and TLS (docs/DEPLOY.md), passed to nats.connect as they are
    nats_user: str | None = None
    nats_password: str | None = None
    nats_token: str | None = None
    nats_creds_file: Path | None = None
    nats_nkey_seed_file: Path | None = None
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None
    # Temporal TLS and API key; without RIDEHAIL_* values, Temporal's own environment
    # configuration applies (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY,
    # TEMPORAL_TLS_*, TEMPORAL_PROFILE and its config file: temporalio.envconfig)
    temporal_tls: bool | None = None
    temporal_tls_ca: Path | None = None
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    temporal_tls_server_name: str | None = None
    temporal_api_key: str | None = None
    jwt_secret_file: Path | None = None
    nats_password_file: Path | None = None
    nats_token_file: Path | None = None
    temporal_api_key_file: Path | None = None
    # Prometheus /metrics of the processes other than the API (docs/DEPLOY.md,
    # "Observing it"): unset = not served, 0 = a free port (printed at start)
    metrics_host: str = "127.0.0.1"
    worker_metrics_port: int | None = Field(None, ge=0, le=65535)
    consumers_metrics_port: int | None = Field(None, ge=0, le=65535)
    relay_metrics_port: int | None = Field(None, ge=0, le=65535)
    # Housekeeping (store.prune, CONTRACT.md section 6): how long each table that grows
    # with traffic keeps a row, and how often the worker's schedule prunes them.
    # processed_keep_s: unset, a week or the stream window and its margin if longer
    processed_keep_s: float = Field(7 * 86400, allow_inf_nan=False)
    idempotency_keep_s: float = Field(2 * 86400, allow_inf_nan=False)
    rate_limit_keep_s: float = Field(3600, ge=0, allow_inf_nan=False)
    offer_keep_s: float = Field(30 * 86400, ge=0, allow_inf_nan=False)
    # the notifications table's and the NOTIFICATIONS stream's (events.streams)
    notification_keep_s: float = Field(30 * 86400, allow_inf_nan=False)
    trip_meter_keep_s: float = Field(30 * 86400, ge=0, allow_inf_nan=False)
    # PostgreSQL: how long an event id stays claimed in outbox_ids (a retried activity's
    # event within it is stored once); the migration that made the table filled it with
    # the ids of as long (store/migrations/versions/0007_outbox_partitioned_by_month.py)
    outbox_ids_keep_s: float = Field(7 * 86400, gt=0, allow_inf_nan=False)
    prune_every_s: float = Field(3600, ge=60, allow_inf_nan=False)
    # Rides within reason (domain.area): pickup and dropoff inside the service area (a
    # GeoJSON Polygon file, or LAT,LNG,RADIUS_KM) and at most max_trip_km apart in a
    # straight line; the hold and the trip report's distance cap follow from the latter
    service_area: str = DEFAULT_SERVICE_AREA
    max_trip_km: float = Field(MAX_TRIP_KM, ge=1, le=MAX_TRIP_KM_LIMIT, allow_inf_nan=False)
    _area: Area | None = PrivateAttr(default=None)

    @field_validator("stream_keep_s")
    @classmethod
    def _keeps_long_enough(cls, value: float) -> float:
        if not value >= MIN_STREAM_KEEP_S:  # NaN too
            raise ValueError(
                f"RIDEHAIL_STREAM_KEEP_S is {value:g}: RIDES and DRIVERS must keep an event "
                f"at least {MIN_STREAM_KEEP_S} seconds (longer than a consumer's "
                "redeliveries take; the default, 86400, is a day)")
        return value

    @field_validator("notification_keep_s")
    @classmethod
    def _notifications_kept_long_enough(cls, value: float) -> float:
        if not value >= MIN_NOTIFICATION_KEEP_S:  # NaN too
            raise ValueError(
                f"RIDEHAIL_NOTIFICATION_KEEP_S is {value:g}: a notification must be kept at "
                f"least {MIN_NOTIFICATION_KEEP_S} seconds (it is also how long the "
                "NOTIFICATIONS stream keeps one, where 0 would mean for good; the default, "
                "2592000, is 30 days)")
        return value

    @model_validator(mode="after")
    def _lifetimes_long_enough(self) -> Settings:
        """A processed-event record outlives every redelivery of its event, and an
        idempotency key the day a client may retry with it."""
        needed = self.stream_keep_s + PROCESSED_MARGIN_S
        if "processed_keep_s" not in self.model_fields_set:
            self.processed_keep_s = max(self.processed_keep_s, needed)
        if not self.processed_keep_s >= needed:
            raise ValueError(
                f"RIDEHAIL_PROCESSED_KEEP_S is {self.processed_keep_s:g}: a processed-event "
                "record must outlive every redelivery of its event, so it must be at least "
                f"RIDEHAIL_STREAM_KEEP_S ({self.stream_keep_s:g}) plus {PROCESSED_MARGIN_S} "
                f"seconds, {needed:g} or more (unset, it is a week or that, if longer)")
        if not self.idempotency_keep_s >= MIN_IDEMPOTENCY_KEEP_S:
            raise ValueError(
                f"RIDEHAIL_IDEMPOTENCY_KEEP_S is {self.idempotency_keep_s:g}: an "
                f"Idempotency-Key must answer a retry for at least {MIN_IDEMPOTENCY_KEEP_S} "
                "seconds (24 hours, as payment APIs promise; the default, 172800, is two "
                "days)")
        return self

    @model_validator(mode="after")
    def _service_area(self) -> Settings:
        """RIDEHAIL_SERVICE_AREA read once, here, so a wrong one stops the process at
        start rather than refusing every ride."""
        self._area = read_area(self.service_area)
        return self

    @property
    def area(self) -> Area:
        """Where a ride may start and end (RIDEHAIL_SERVICE_AREA)."""
        if self._area is None:
            self._area = read_area(self.service_area)
        return self._area

    @model_validator(mode="after")
    def _secrets_from_files(self) -> Settings:
        for name in SECRETS:
            path: Path | None = getattr(self, f"{name}_file")
            if path is None:
                continue
            if getattr(self, name):
                raise ValueError(f"RIDEHAIL_{name.upper()} and RIDEHAIL_{name.upper()}_FILE "
                                 "are both set; set one")
            try:
                setattr(self, name, path.read_text().strip())
            except OSError as e:
                raise ValueError(f"RIDEHAIL_{name.upper()}_FILE: cannot read {path}: "
                                 f"{e.strerror}") from None
            setattr(self, f"{name}_file", None)  # read: children get the value itself
        return self

    @model_validator(mode="after")
    def _temporal_environment(self) -> Settings:
        """TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE (or a profile) where RIDEHAIL_* is unset:
        the RIDEHAIL_* names win."""
        if {"temporal_address", "temporal_namespace"} <= self.model_fields_set:
            return self
        standard = temporal_environment()
        if "temporal_address" not in self.model_fields_set and standard.get("target_host"):
            self.temporal_address = str(standard["target_host"])
        if "temporal_namespace" not in self.model_fields_set and standard.get("namespace"):
            self.temporal_namespace = str(standard["namespace"])
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'ridehail.db'}"

    @property
    def nats_servers(self) -> list[str]:
        """The servers of RIDEHAIL_NATS_URL (a cluster is a comma-separated list)."""
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]

    @property
    def nats_host_port(self) -> tuple[str, int]:
        parsed = urlparse(self.nats_servers[0])
        return parsed.hostname or "127.0.0.1", parsed.port or 4222

    @property
    def temporal_host_port(self) -> tuple[str, int]:
        host, _, port = self.temporal_address.rpartition(":")
        return host or "127.0.0.1", int(port)

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def temporal_ui_url(self) -> str:
        return f"http://{self.temporal_host_port[0]}:{self.temporal_ui_port}"

    def find_jwt_secret(self) -> tuple[str, str]:
        """The JWT secret and where it was found: ``RIDEHAIL_JWT_SECRET``, or else the file
        ``ridehail dev`` keeps in the data dir (named by its absolute path)."""
        if self.jwt_secret:
            return _long_enough(self.jwt_secret, "RIDEHAIL_JWT_SECRET"), "RIDEHAIL_JWT_SECRET"
        path = (self.data_dir / JWT_SECRET_FILE).resolve()
        if path.is_file():
            secret = path.read_text().strip()
            if secret:
                return _long_enough(secret, str(path)), str(path)
        raise SettingsError(
            f"RIDEHAIL_JWT_SECRET is not set and {path} does not exist. Set it, or run "
            "`ridehail dev` (with the same RIDEHAIL_DATA_DIR), which creates that file."
        )

    def running_dev(self) -> tuple[Settings, Path | None]:
        """These settings pointed at the servers of a ``ridehail dev`` running on this data
        dir (it writes them to ``dev.json`` while it runs: it may have started its own
        NATS or Temporal on a free port), for the addresses not set explicitly; and the
        file used, if any."""
        path = self.data_dir / DEV_FILE
        try:
            running = json.loads(path.read_text())
            os.kill(int(running["pid"]), 0)  # gone: a file left by a killed stack
        except (OSError, ValueError, KeyError, TypeError):
            return self, None
        update = {k: running[k] for k in DEV_ADDRESSES
                  if k in running and k not in self.model_fields_set}
        return (self.model_copy(update=update), path) if update else (self, None)

    def require_jwt_secret(self) -> str:
        return self.find_jwt_secret()[0]

    def nats_connect_options(self) -> NatsConnectOptions:
        """Credentials and TLS for ``nats.connect``, from the RIDEHAIL_NATS_* settings."""
        options: NatsConnectOptions = {}
        if self.nats_user:
            options["user"] = self.nats_user
        if self.nats_password:
            options["password"] = self.nats_password
        if self.nats_token:
            options["token"] = self.nats_token
        if self.nats_creds_file:
            options["user_credentials"] = str(self.nats_creds_file)
        if self.nats_nkey_seed_file:
            options["nkeys_seed"] = str(self.nats_nkey_seed_file)
        uses_tls = any(urlparse(u).scheme == "tls" for u in self.nats_servers)
        if uses_tls or self.nats_tls_ca or self.nats_tls_cert:
            import ssl

            context = ssl.create_default_context(
                cafile=str(self.nats_tls_ca) if self.nats_tls_ca else None)
            if self.nats_tls_cert:
                context.load_cert_chain(str(self.nats_tls_cert),
                                        str(self.nats_tls_key) if self.nats_tls_key else None)
            options["tls"] = context
        return options

    def as_env(self) -> dict[str, str]:
        """These settings as ``RIDEHAIL_*`` variables, for a process started with them."""
        return {
            f"RIDEHAIL_{name.upper()}": str(value)
            for name, value in self.model_dump().items()
            if value is not None
        }

    def with_dev_secret(self) -> Settings:
        """The settings with a JWT secret, creating one in the data dir if none is set."""
        if self.jwt_secret:
            return self
        path = self.data_dir / JWT_SECRET_FILE
        if not path.exists():
            import secrets

            self.data_dir.mkdir(parents=True, exist_ok=True)
            # private from the first byte: created 0600, never readable by others
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first: use theirs
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_urlsafe(32))
        return self.model_copy(update={"jwt_secret": path.read_text().strip()})


def _long_enough(secret: str, where: str) -> str:
    """The secret, if it has at least MIN_JWT_SECRET_BYTES (RFC 7518 section 3.2: an
    HS256 key is at least as long as the hash, 256 bits); else a SettingsError."""
    size = len(secret.encode())
    if size < MIN_JWT_SECRET_BYTES:
        raise SettingsError(
            f"The JWT secret in {where} is {size} bytes long; it must be at least "
            f"{MIN_JWT_SECRET_BYTES} (make one with: python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')")
    return secret


def read_area(value: str) -> Area:
    """The service area RIDEHAIL_SERVICE_AREA names: LAT,LNG,RADIUS_KM, or the path of a
    GeoJSON file holding a Polygon; ValueError saying what is wrong."""
    path = Path(value).expanduser()
    if value.count(",") == 2 and not path.is_file():
        try:
            return circle_of(value)
        except ValueError as e:
            raise ValueError(f"RIDEHAIL_SERVICE_AREA: {e}") from None
    try:
        geojson = json.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"RIDEHAIL_SERVICE_AREA: {value!r} is not LAT,LNG,RADIUS_KM and "
                         f"cannot be read as a GeoJSON file: {e.strerror}") from None
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError too
        raise ValueError(f"RIDEHAIL_SERVICE_AREA: {path} is not JSON: {e}") from None
    try:
        return polygon_of(geojson, str(path))
    except ValueError as e:
        raise ValueError(f"RIDEHAIL_SERVICE_AREA: {path}: {e}") from None


def temporal_environment() -> ClientConnectConfig:
    """Temporal's standard client configuration (``temporalio.envconfig``: TEMPORAL_*
    variables and the profile they name), as ``Client.connect`` arguments (a new dict)."""
    from temporalio.envconfig import ClientConfigProfile

    try:
        return ClientConfigProfile.load().to_client_connect_config()
    except Exception as e:  # noqa: BLE001 — a broken profile file is the user's to fix
        raise ValueError(f"Temporal's environment configuration: {e}") from None
