"""Settings every service shares (pydantic-settings, prefix ``TRANCHE_``).

A bad setting stops the service at start with one sentence per problem naming the variable and
what it expected (:func:`load`), never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORTS = {
    "signal": 8101,
    "safety": 8102,
    "executor": 8103,
    "ledger": 8104,
    "dashboard": 8105,
}


class ServiceSettings(BaseSettings):
    """Shared by every service; a service subclasses it with its own fields."""

    model_config = SettingsConfigDict(env_prefix="TRANCHE_", extra="ignore", frozen=True)

    service: str = "service"
    mode: Literal["mock", "production"] = "mock"
    nats_url: str = "nats://127.0.0.1:4250"
    """Default: the embedded stack's server (`tranche up`); 4250 keeps clear of a system NATS.
    Several servers of one cluster: comma-separated."""
    nats_connect_timeout_s: float = Field(default=10.0, gt=0)
    nats_user: str | None = None
    """This service's NATS user (deploy/nats/permissions.conf); unset: connect without one."""
    nats_password: SecretStr | None = None
    """Its password: never logged, never in an error message."""
    stream_setup: Literal["create", "check"] = "create"
    """``create``: make or update the streams and buckets at start (needs the JetStream admin
    rights a per-service user lacks); ``check``: only check they exist, once provisioned by
    ``tranche nats provision`` as the admin user (every deployment with permissions)."""
    data_dir: Path = Path("var")
    database_url: str | None = None
    """SQLAlchemy URL; default ``sqlite:///<data_dir>/<service>.db``."""
    http_host: str = "127.0.0.1"
    http_port: int | None = Field(default=None, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    config_file: Path | None = None
    """Bots and products (TOML); default: the sample ``config/tranche.toml``."""
    stream_replicas: int = Field(default=1, ge=1, le=5)
    """Replicas of every stream and of the positions bucket (3 on a NATS cluster of 3)."""
    outbox_poll_s: float = Field(default=1.0, gt=0)
    consumer_concurrency: int = Field(default=16, ge=1, le=256)
    """Messages each durable consumer handles at once; one at a time per bot (make bench: 16
    took 100 bots from 16 to 27 orders/s on 2 cores; beyond that the CPU is the limit)."""
    fault: Literal["", "crash_before_publish", "nack_first_delivery"] = ""
    """Fault injection for the test suite: ``crash_before_publish`` exits the process right after
    the first outbox commit, before anything is published; ``nack_first_delivery`` nacks every
    message's first delivery (a redelivery storm)."""

    @property
    def port(self) -> int:
        return self.http_port if self.http_port is not None else DEFAULT_PORTS.get(self.service, 0)

    @property
    def nats_auth(self) -> dict[str, str]:
        """``user``/``password`` for ``nats.connect`` (empty without a user)."""
        return nats_auth(self.nats_user, self.nats_password)

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / (self.service + '.db')}"


def nats_auth(user: str | None, password: SecretStr | str | None) -> dict[str, str]:
    """Connect options for a NATS user: ``{"user": ..., "password": ...}`` or ``{}``."""
    if not user:
        return {}
    secret = password.get_secret_value() if isinstance(password, SecretStr) else password
    return {"user": user, "password": secret or ""}


S = TypeVar("S", bound=BaseSettings)


def describe_errors(error: ValidationError, prefix: str = "TRANCHE_") -> list[str]:
    """One sentence per invalid setting: the variable, what it expected, what it got."""
    lines = []
    for item in error.errors():
        name = prefix + "_".join(str(part) for part in item["loc"]).upper()
        got = item.get("input")
        lines.append(f"{name}: {item['msg']} (got {got!r})")
    return lines


def load(cls: type[S], **overrides: object) -> S:
    """Build settings or stop the process with a clear sentence per problem (exit code 2)."""
    try:
        return cls(**overrides)
    except ValidationError as error:
        for line in describe_errors(error):
            print(f"invalid setting: {line}", file=sys.stderr)
        raise SystemExit(2) from None
