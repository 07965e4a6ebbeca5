"""Settings every service shares (pydantic-settings, prefix ``TRANCHE_``).

A bad setting stops the service at start with one sentence per problem naming the variable and
what it expected (:func:`load`), never a traceback.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from shared.signing import Verifier, key_or_exit, verifier_from

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
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    """The event loop the service runs on: uvloop's (libuv; the default: about 8 % less CPU per
    order at 100 bots, docs/benchmarks.md) or the standard library's."""
    fault: Literal["", "crash_before_publish", "nack_first_delivery"] = ""
    """Fault injection for the test suite: ``crash_before_publish`` exits the process right after
    the first outbox commit, before anything is published; ``nack_first_delivery`` nacks every
    message's first delivery (a redelivery storm)."""

    @field_validator("database_url")
    @classmethod
    def _a_database_we_use(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(
                "is not a database URL: expected sqlite:///path/to/file.db or "
                "postgresql://user:password@host:5432/database"
            ) from None
        backend = url.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"{backend} is not supported: use sqlite:/// or postgresql://")
        if backend == "sqlite" and not url.database:
            raise ValueError("names no SQLite file: use sqlite:///path/to/file.db")
        if backend == "postgresql" and not (url.host and url.database):
            raise ValueError("needs a host and a database: postgresql://user@host:5432/database")
        return value

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


SIGNING_PUBLIC_KEY = "TRANCHE_SIGNING_PUBLIC_KEY"


class ReadsSafetyEvents(ServiceSettings):
    """A service that acts on what only safety may say (the executor places approvals and
    follows halts, the signal flattens on a flatten request): it believes only what safety
    signed."""

    signing_public_key: str | None = None
    """Safety's Ed25519 public key (PEM or ``ed25519:<base64>``): approvals and safety events are
    acted on only with safety's signature (shared/signing.py). Required; or
    ``signing_public_key_file``."""
    signing_public_key_file: Path | None = None
    """A file holding ``signing_public_key`` (a mounted secret)."""

    def safety_verifier(self, why: str) -> Verifier:
        """Safety's public key; a missing or bad one stops the service with one sentence naming
        the variable (never the key) and ``why`` it cannot run without it."""
        return key_or_exit(
            self.service,
            why,
            lambda: verifier_from(
                self.signing_public_key, self.signing_public_key_file, SIGNING_PUBLIC_KEY
            ),
        )


ORDER_SIGNING_PUBLIC_KEY = "TRANCHE_ORDER_SIGNING_PUBLIC_KEY"


class ReadsOrderEvents(ServiceSettings):
    """A service that acts on the executor's order events (the ledger books them, safety counts
    them, the signal and the dashboard read them): it believes only those the executor signed."""

    order_signing_public_key: str | None = None
    """The executor's Ed25519 public key (PEM or ``ed25519:<base64>``): an order event is acted
    on only with the executor's signature (shared/signing.py). Required; or
    ``order_signing_public_key_file``."""
    order_signing_public_key_file: Path | None = None
    """A file holding ``order_signing_public_key`` (a mounted secret)."""

    def order_event_verifier(self) -> Verifier:
        """The executor's public key; a missing or bad one stops the service with one sentence
        naming the variable (never the key)."""
        return key_or_exit(
            self.service,
            "it acts only on order events the executor signed",
            lambda: verifier_from(
                self.order_signing_public_key,
                self.order_signing_public_key_file,
                ORDER_SIGNING_PUBLIC_KEY,
            ),
        )


def nats_auth(user: str | None, password: SecretStr | str | None) -> dict[str, str]:
    """Connect options for a NATS user: ``{"user": ..., "password": ...}`` or ``{}``."""
    if not user:
        return {}
    secret = password.get_secret_value() if isinstance(password, SecretStr) else password
    return {"user": user, "password": secret or ""}


S = TypeVar("S", bound=BaseSettings)


def describe_errors(error: ValidationError, prefix: str = "TRANCHE_") -> list[str]:
    """One sentence per invalid setting: the variable, what it expected, what it got (never
    the value of a secret or of a database URL, which may hold a password)."""
    lines = []
    for item in error.errors():
        name = prefix + "_".join(str(part) for part in item["loc"]).upper()
        secret = any(word in name for word in ("PASSWORD", "SECRET", "TOKEN", "KEY", "URL"))
        got = "" if secret else f" (got {item.get('input')!r})"
        lines.append(f"{name}: {item['msg']}{got}")
    return lines


TOOL_SETTINGS = frozenset(
    {
        "TRANCHE_SIGNAL_URL",  # tranche bots: where the signal service's HTTP API is
        "TRANCHE_SAFETY_URL",  # tranche halt/resume/limits: where safety's HTTP API is
        "TRANCHE_EXECUTOR_URL",  # tranche orders: where the executor's HTTP API is
        "TRANCHE_LEDGER_URL",  # tranche ledger history: where the ledger's HTTP API is
        "TRANCHE_POSTGRES_PASSWORD",  # docker compose: the PostgreSQL container's password
        "TRANCHE_FAULTS_LONG",  # the fault tests' long cases
    }
)
"""``TRANCHE_*`` variables that tools read, not services: a service leaves them alone."""
TOOL_PREFIXES = ("TRANCHE_NATS_PASSWORD_", "TRANCHE_TEST_", "TRANCHE_BENCH_", "TRANCHE_CLUSTER_")
"""Families of tool variables: each NATS user's password for the server's config, the test
suite's and the benchmarks' own switches."""

SERVICE_SETTINGS = frozenset(
    {
        "TRANCHE_ADD_STEP_PCT", "TRANCHE_APPROVAL_TTL_S", "TRANCHE_BOTS_RESEED",
        "TRANCHE_BOT_LIMITS", "TRANCHE_BREAKER_RESET_S", "TRANCHE_BREAKER_TRIPS_TO",
        "TRANCHE_CLIENT_ORDER_PREFIX", "TRANCHE_COINBASE_API_KEY", "TRANCHE_COINBASE_API_SECRET",
        "TRANCHE_COINBASE_BASE_URL", "TRANCHE_COINBASE_CA_FILE", "TRANCHE_COINBASE_FEED",
        "TRANCHE_COINBASE_FEED_TRANSPORT", "TRANCHE_COINBASE_MAX_BACKOFF_S",
        "TRANCHE_COINBASE_POLL_S", "TRANCHE_COINBASE_TIMEOUT_S",
        "TRANCHE_COINBASE_WS_FALLBACK_AFTER", "TRANCHE_COINBASE_WS_RETRY_S",
        "TRANCHE_COINBASE_WS_SILENCE_S", "TRANCHE_COINBASE_WS_URL", "TRANCHE_CONFIG_FILE",
        "TRANCHE_CONSUMER_CONCURRENCY", "TRANCHE_CONTROL_TOKEN", "TRANCHE_DAILY_LOSS_ALL_BOTS",
        "TRANCHE_DAILY_LOSS_PER_BOT", "TRANCHE_DATABASE_URL", "TRANCHE_DATA_DIR",
        "TRANCHE_EVENT_LOOP",
        "TRANCHE_ENTRY_COOLDOWN_S", "TRANCHE_EXCHANGE_CHECK_S", "TRANCHE_EXCHANGE_REQUESTS_PER_S",
        "TRANCHE_EXCHANGE_UNREACHABLE_AFTER_S", "TRANCHE_EXECUTOR_FAULT", "TRANCHE_EXIT_ALLOCATION",
        "TRANCHE_EXIT_COOLDOWN_S", "TRANCHE_FAULT", "TRANCHE_HEALTH_EVERY_S", "TRANCHE_HTTP_HOST",
        "TRANCHE_HTTP_PORT", "TRANCHE_INTENT_TTL_S", "TRANCHE_LIMIT_ORDER_TTL_S",
        "TRANCHE_LIVE_CHECKS", "TRANCHE_LIVE_TRADING_CONFIRMED", "TRANCHE_LOG_FORMAT",
        "TRANCHE_LOG_LEVEL", "TRANCHE_LOSING_EXITS_IN_A_ROW", "TRANCHE_LOST_ORDER_GRACE_S",
        "TRANCHE_MAX_ENTRIES_ALL_DAY", "TRANCHE_MAX_ENTRIES_ALL_HOUR",
        "TRANCHE_MAX_ENTRIES_PER_BOT_DAY", "TRANCHE_MAX_ENTRIES_PER_BOT_HOUR",
        "TRANCHE_MAX_MARKET_AGE_S", "TRANCHE_MAX_NOTIONAL_PER_BOT_DAY",
        "TRANCHE_MAX_OPEN_POSITIONS", "TRANCHE_MAX_ORDER_NOTIONAL", "TRANCHE_MAX_POSITION_NOTIONAL",
        "TRANCHE_MAX_PRICE_AGE_S", "TRANCHE_MAX_TRANCHES", "TRANCHE_MIN_ORDER_NOTIONAL",
        "TRANCHE_MOCK_FEE_RATE", "TRANCHE_MOCK_FILL_AT", "TRANCHE_MOCK_LATENCY_MS",
        "TRANCHE_MOCK_MAKER_FEE_RATE", "TRANCHE_MOCK_MARKET_FILL_PARTS",
        "TRANCHE_MOCK_PARTIAL_FILL_RATIO", "TRANCHE_MOCK_RATE_LIMIT_RATE",
        "TRANCHE_MOCK_REJECT_RATE", "TRANCHE_MOCK_SEED", "TRANCHE_MOCK_SERVER_ERROR_RATE",
        "TRANCHE_MOCK_SLIPPAGE_BPS", "TRANCHE_MOCK_TIMEOUT_AFTER_PLACE_RATE", "TRANCHE_MODE",
        "TRANCHE_NATS_CONNECT_TIMEOUT_S", "TRANCHE_NATS_PASSWORD", "TRANCHE_NATS_URL",
        "TRANCHE_NATS_USER", "TRANCHE_ORDER_FAILURES", "TRANCHE_ORDER_FAILURE_WINDOW_S",
        "TRANCHE_ORDER_SIGNING_KEY", "TRANCHE_ORDER_SIGNING_KEY_FILE",
        "TRANCHE_ORDER_SIGNING_PUBLIC_KEY", "TRANCHE_ORDER_SIGNING_PUBLIC_KEY_FILE",
        "TRANCHE_ORDER_REQUESTS_PER_MINUTE", "TRANCHE_OUTBOX_POLL_S", "TRANCHE_POLL_INTERVAL_S",
        "TRANCHE_POLL_MAX_INTERVAL_S", "TRANCHE_POSITIONS_WAIT_S", "TRANCHE_POSITION_WAIT_S",
        "TRANCHE_PRICE_BAND_PCT", "TRANCHE_PRODUCT_RULES_REFRESH_S", "TRANCHE_PUSH_EVERY_S",
        "TRANCHE_RAMP_MAX_NOTIONAL", "TRANCHE_RAMP_TRADES", "TRANCHE_RANDOM_WALK",
        "TRANCHE_RANDOM_WALK_SEED", "TRANCHE_REPLAY", "TRANCHE_REPLAY_LOCKSTEP",
        "TRANCHE_RESTING_STOP_POLL_MAX_INTERVAL_S",
        "TRANCHE_REPLAY_SETTLE_TIMEOUT_S", "TRANCHE_REPLAY_SPEED", "TRANCHE_RETRY_ATTEMPTS",
        "TRANCHE_RETRY_BASE_DELAY_S", "TRANCHE_RETRY_MAX_DELAY_S", "TRANCHE_SERVICE",
        "TRANCHE_SERVICE_URLS", "TRANCHE_SIGNING_KEY", "TRANCHE_SIGNING_KEY_FILE",
        "TRANCHE_SIGNING_PUBLIC_KEY", "TRANCHE_SIGNING_PUBLIC_KEY_FILE", "TRANCHE_STALE_AFTER_S",
        "TRANCHE_STORAGE_ATTEMPTS", "TRANCHE_STREAM_REPLICAS", "TRANCHE_STREAM_SETUP",
        "TRANCHE_WEEKLY_LOSS_PER_BOT",
    }
)  # fmt: skip
"""Every variable some service reads (tests/unit/test_settings.py keeps it equal to the fields of
the services' settings classes): one environment may be shared by all services, so a setting
of another service is not unknown here."""


def unknown_settings(environ: Mapping[str, str], own: Iterable[str] = ()) -> list[str]:
    """One sentence per ``TRANCHE_*`` variable that nothing reads, with the closest known name:
    a misspelled limit would otherwise be ignored and its default apply."""
    known = SERVICE_SETTINGS | TOOL_SETTINGS | set(own)
    lines = []
    for name in sorted(environ):
        if not name.startswith("TRANCHE_") or name in known or name.startswith(TOOL_PREFIXES):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = f": did you mean {close[0]}?" if close else " (see the README's settings)"
        lines.append(f"{name} is not a Tranche setting{hint}")
    return lines


def _settings_error(error: SettingsError, prefix: str = "TRANCHE_") -> str:
    """pydantic-settings' complaint about a value it could not even parse (JSON), named."""
    found = re.search(r'field "([a-z0-9_]+)"', str(error))
    name = prefix + found.group(1).upper() if found else "a setting"
    return f'{name}: is not valid JSON (e.g. {{"bot-1": {{"max_tranches": 2}}}})'


def load(cls: type[S], **overrides: object) -> S:
    """Build settings or stop the process with a clear sentence per problem (exit code 2):
    invalid values, values that are not even JSON, and unknown ``TRANCHE_*`` variables."""
    problems = unknown_settings(
        os.environ, (f"TRANCHE_{name.upper()}" for name in cls.model_fields)
    )
    if not problems:
        try:
            return cls(**overrides)
        except ValidationError as error:
            problems = describe_errors(error)
        except SettingsError as error:
            problems = [_settings_error(error)]
    for line in problems:
        print(f"invalid setting: {line}", file=sys.stderr)
    raise SystemExit(2)
