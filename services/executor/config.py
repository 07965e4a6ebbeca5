"""The executor's settings (prefix ``TRANCHE_``); docs/executor.md lists each with its default
and where the default comes from."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from services.executor.exchanges.mock import FillAt, MockSettings
from shared.settings import ReadsSafetyEvents


class ExecutorSettings(ReadsSafetyEvents):
    service: str = "executor"

    # -- orders
    approval_ttl_s: float = Field(default=120, ge=0)
    """An approval decided longer ago than this (wall clock) is refused; 0 = no limit."""
    limit_order_ttl_s: int = Field(default=300, gt=0)
    """A limit order not filled this long after the exchange accepted it is cancelled (an
    intent's ``order_ttl_s`` overrides it)."""
    client_order_prefix: str = Field(default="tranche-", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    """Put before every ``client_order_id`` sent to the exchange; reconciliation adopts open
    orders with this prefix that the store does not know."""

    # -- status sync
    poll_interval_s: float = Field(default=1.0, gt=0)
    """First poll of a non-final order; doubled while nothing changes, up to the cap."""
    poll_max_interval_s: float = Field(default=30.0, gt=0)
    resting_stop_poll_max_interval_s: float = Field(default=120.0, gt=0)
    """The cap for a protective stop resting untriggered on the exchange (``open``, no cancel
    asked): it rests for days by design, so polling it at the cap of other orders spends the
    account's rate limit for nothing. A triggered (partly filled) stop, or one being cancelled,
    is polled as any order."""
    exchange_requests_per_s: float = Field(default=30.0, gt=0)
    """One limiter for every exchange call: Coinbase allows 30 private requests/s per key."""
    order_requests_per_minute: int = Field(default=30, ge=3, le=1800)
    """Exchange requests one order may make in any minute (polls, fills, cancels, look-ups),
    whatever it meets: a failing order never eats the account's shared rate limit."""
    lost_order_grace_s: float = Field(default=300, gt=0)
    """How long an order the exchange accepted may answer 404 before it is looked for by
    ``client_order_id`` and, not found, marked ``unknown_at_exchange`` (an alert)."""
    retry_attempts: int = Field(default=5, ge=1, le=20)
    """Attempts per exchange call on 429/5xx (backoff with full jitter)."""
    retry_base_delay_s: float = Field(default=0.25, ge=0)
    retry_max_delay_s: float = Field(default=8.0, ge=0)

    exchange_check_s: float = Field(default=30, ge=1)
    """Production: when no call reached the exchange for this long, one product's rules are
    fetched, so ``/ready`` tells the truth without orders."""
    exchange_unreachable_after_s: float = Field(default=60, gt=0)
    """Degraded answers (429/5xx/timeouts) with nothing else for this long: ``/ready`` says
    unreachable (503). A refused key (401/403) is 503 at once."""
    product_rules_refresh_s: float = Field(default=3600, ge=10)
    """Production: how often each product's rules are fetched again from the exchange
    (``get_product``); also fetched at start and when an approval names a new product."""

    # -- mock exchange
    mock_fee_rate: Decimal = Field(default=Decimal("0.006"), ge=0, lt=1)
    """Taker fee of the mock exchange."""
    mock_maker_fee_rate: Decimal = Field(default=Decimal("0.004"), ge=0, lt=1)
    mock_slippage_bps: Decimal = Field(default=Decimal(0), ge=0, le=1000)
    mock_partial_fill_ratio: Decimal = Field(default=Decimal(1), gt=0, le=1)
    mock_market_fill_parts: int = Field(default=1, ge=1, le=100)
    mock_latency_ms: float = Field(default=0, ge=0, le=60_000)
    mock_seed: int = 0
    mock_reject_rate: float = Field(default=0, ge=0, le=1)
    mock_rate_limit_rate: float = Field(default=0, ge=0, le=1)
    mock_server_error_rate: float = Field(default=0, ge=0, le=1)
    mock_timeout_after_place_rate: float = Field(default=0, ge=0, le=1)
    mock_fill_at: FillAt = "latest"
    """``latest``: market orders fill at the latest ticker the executor has seen; ``intent``: at
    the intent's reference price and market time (deterministic replays; ``tranche replay``)."""
    max_price_age_s: float = Field(default=0, ge=0)
    """Kept for compatibility; the mock fills at the latest price it was given."""

    # -- production (Coinbase): all three of mode, credentials and confirmation
    coinbase_api_key: SecretStr | None = None
    coinbase_api_secret: SecretStr | None = None
    live_trading_confirmed: bool = False
    coinbase_base_url: str = Field(default="api.coinbase.com", pattern=r"^[A-Za-z0-9.\-]+(:\d+)?$")
    """Host and optional port, no scheme (the SDK adds ``https://``)."""
    coinbase_timeout_s: float = Field(default=10.0, gt=0)
    coinbase_ca_file: Path | None = None
    """Trust this CA bundle instead of the system's (a test stand-in; never needed live)."""

    control_token: SecretStr | None = None
    """Bearer token for ``POST /orders/{id}/resolve`` (``tranche orders resolve``); unset:
    resolving over HTTP is refused."""
    # -- defence in depth (shared/signing.py)
    # safety's public key: ReadsSafetyEvents (an approval or a safety event only with safety's
    # signature)
    order_signing_key: SecretStr | None = None
    """The executor's own Ed25519 private key (PEM or ``ed25519:<base64>``; not safety's): it
    signs every order event, and the ledger, safety, the signal and the dashboard act only on
    order events with its signature. Required; or ``order_signing_key_file``."""
    order_signing_key_file: Path | None = None
    """A file holding ``order_signing_key`` (a mounted secret)."""

    # -- fault injection for the test suite
    executor_fault: Literal["", "crash_after_send"] = ""
    """``crash_after_send`` exits the process right after the exchange accepted an order and
    before the answer is recorded (the kill -9 test)."""

    def production_opt_in_missing(self) -> list[str]:
        """What live trading still needs, by setting name (empty: all three are there)."""
        missing = []
        if self.mode != "production":
            missing.append("TRANCHE_MODE=production")
        if not self.coinbase_api_key or not self.coinbase_api_secret:
            missing.append("TRANCHE_COINBASE_API_KEY and TRANCHE_COINBASE_API_SECRET")
        if not self.live_trading_confirmed:
            missing.append("TRANCHE_LIVE_TRADING_CONFIRMED=true")
        return missing

    @property
    def approval_ttl(self) -> timedelta | None:
        return timedelta(seconds=self.approval_ttl_s) if self.approval_ttl_s else None

    def mock_settings(self) -> MockSettings:
        return MockSettings(
            taker_fee_rate=self.mock_fee_rate,
            maker_fee_rate=self.mock_maker_fee_rate,
            slippage_bps=self.mock_slippage_bps,
            partial_fill_ratio=self.mock_partial_fill_ratio,
            market_fill_parts=self.mock_market_fill_parts,
            latency_ms=self.mock_latency_ms,
            seed=self.mock_seed,
            reject_rate=self.mock_reject_rate,
            rate_limit_rate=self.mock_rate_limit_rate,
            server_error_rate=self.mock_server_error_rate,
            timeout_after_place_rate=self.mock_timeout_after_place_rate,
            fill_at=self.mock_fill_at,
        )
