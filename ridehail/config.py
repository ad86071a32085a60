"""Settings, read from ``RIDEHAIL_*`` environment variables (CONTRACT.md section 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

TASK_QUEUE = "rides"
JWT_SECRET_FILE = "jwt_secret"


class SettingsError(RuntimeError):
    """A setting is missing or wrong; the message says what to do."""


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
    offer_timeout_s: float = Field(15, gt=0)
    matching_deadline_s: float = Field(120, gt=0)
    free_cancel_s: float = Field(120, ge=0)
    stream_replicas: int = Field(1, ge=1, le=5)
    log_format: Literal["text", "json"] = "text"

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
            return self.jwt_secret, "RIDEHAIL_JWT_SECRET"
        path = (self.data_dir / JWT_SECRET_FILE).resolve()
        if path.is_file():
            secret = path.read_text().strip()
            if secret:
                return secret, str(path)
        raise SettingsError(
            f"RIDEHAIL_JWT_SECRET is not set and {path} does not exist. Set it, or run "
            "`ridehail dev` (with the same RIDEHAIL_DATA_DIR), which creates that file."
        )

    def require_jwt_secret(self) -> str:
        return self.find_jwt_secret()[0]

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
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return self.model_copy(update={"jwt_secret": path.read_text().strip()})
