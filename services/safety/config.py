"""Safety's settings (prefix ``TRANCHE_``): global defaults, per-bot overrides, the kill switch
token and the production opt-in. docs/safety.md lists every rule with its setting and default."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from services.safety.breakers import BreakerLimits
from services.safety.rules import Limits
from shared.settings import ReadsOrderEvents


class BotLimits(BaseModel):
    """Per-bot overrides of the global defaults (a missing field keeps the default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entry_cooldown_s: float | None = Field(default=None, ge=0)
    exit_cooldown_s: float | None = Field(default=None, ge=0)
    max_entries_per_bot_hour: int | None = Field(default=None, ge=0)
    max_entries_per_bot_day: int | None = Field(default=None, ge=0)
    max_notional_per_bot_day: Decimal | None = Field(default=None, ge=0)
    max_position_notional: Decimal | None = Field(default=None, ge=0)
    max_order_notional: Decimal | None = Field(default=None, ge=0)
    min_order_notional: Decimal | None = Field(default=None, ge=0)
    max_tranches: int | None = Field(default=None, ge=1)
    add_step_pct: Decimal | None = Field(default=None, ge=0, lt=100)
    ramp_trades: int | None = Field(default=None, ge=0)
    ramp_max_notional: Decimal | None = Field(default=None, gt=0)
    price_band_pct: Decimal | None = Field(default=None, gt=0)
    losing_exits_in_a_row: int | None = Field(default=None, ge=1)
    daily_loss_per_bot: Decimal | None = Field(default=None, ge=0)
    weekly_loss_per_bot: Decimal | None = Field(default=None, ge=0)


def _optional_seconds(value: float) -> timedelta | None:
    return timedelta(seconds=value) if value > 0 else None


class SafetySettings(ReadsOrderEvents):
    service: str = "safety"
    entry_cooldown_s: float = Field(default=300, ge=0)
    """Minimum event time between two entries (or adds) of a bot."""
    exit_cooldown_s: float = Field(default=60, ge=0)
    """Minimum event time after an exit before the bot's next trade."""
    max_entries_per_bot_hour: int = Field(default=6, ge=0)
    max_entries_per_bot_day: int = Field(default=24, ge=0)
    max_entries_all_hour: int = Field(default=60, ge=0)
    max_entries_all_day: int = Field(default=400, ge=0)
    max_notional_per_bot_day: Decimal | None = Field(default=None, ge=0)
    max_open_positions: int | None = Field(default=None, ge=0)
    """Positions open across all bots; off by default (set it to what you mean to hold)."""
    max_position_notional: Decimal | None = Field(default=None, ge=0)
    max_order_notional: Decimal | None = Field(default=None, ge=0)
    min_order_notional: Decimal | None = Field(default=None, ge=0)
    max_tranches: int = Field(default=3, ge=1)
    add_step_pct: Decimal = Field(default=Decimal(0), ge=0, lt=100)
    ramp_trades: int = Field(default=3, ge=0)
    ramp_max_notional: Decimal | None = Field(default=None, gt=0)
    live_checks: Literal["production", "on", "off"] = "production"
    """When the live market-data checks (stale feed, price band, intent time to live) run:
    in production only (default: a replay runs its ticks ahead of its intents), always, never."""
    max_market_age_s: float = Field(default=60, ge=0)
    """0 = off."""
    price_band_pct: Decimal | None = Field(default=Decimal(5), gt=0)
    intent_ttl_s: float = Field(default=300, ge=0)
    """0 = off."""
    losing_exits_in_a_row: int | None = Field(default=3, ge=1)
    daily_loss_per_bot: Decimal | None = Field(default=None, ge=0)
    daily_loss_all_bots: Decimal | None = Field(default=None, ge=0)
    weekly_loss_per_bot: Decimal | None = Field(default=None, ge=0)
    order_failures: int | None = Field(default=3, ge=1)
    order_failure_window_s: float = Field(default=3600, gt=0)
    breaker_trips_to: Literal["reducing", "halted"] = "reducing"
    breaker_reset_s: float = Field(default=86400, ge=0)
    """Event time after which a tripped breaker resets by itself; 0 = only an operator resets."""
    positions_wait_s: float = Field(default=5, ge=0)
    """After a start, how long an intent waits for the positions bucket to be read, and how long
    for a position that reflects fewer fills than safety has seen, before it is decided anyway
    (and rejected: position unknown)."""
    storage_attempts: int = Field(default=3, ge=1)
    """Deliveries of an intent while storage fails before it is rejected (fail closed)."""
    bot_limits: dict[str, BotLimits] = Field(default_factory=dict)
    """Per-bot overrides as JSON, e.g. ``{"bot-1": {"max_entries_per_bot_hour": 2}}``."""
    control_token: SecretStr | None = None
    """Bearer token for ``POST /halt`` and ``POST /resume``; unset: HTTP control refused."""
    signing_key: SecretStr | None = None
    """Safety's Ed25519 private key (PEM): it signs every approval, rejection, safety event and
    command answer (shared/signing.py). Required; or ``signing_key_file``."""
    signing_key_file: Path | None = None
    """A file holding ``signing_key`` (a mounted secret)."""
    # The live-trading confirmation, read here only to check that it is set. Safety never calls
    # the exchange, so it needs no credentials: the secret stays with the executor.
    live_trading_confirmed: bool = False

    def production_opt_in_missing(self) -> list[str]:
        """What production still needs on safety's side (the executor checks its credentials)."""
        return [] if self.live_trading_confirmed else ["TRANCHE_LIVE_TRADING_CONFIRMED=true"]

    def limits_for(self, bot_id: str) -> Limits:
        """The global defaults with the bot's overrides."""
        own = self.bot_limits.get(bot_id, BotLimits())

        def pick(name: str):
            value = getattr(own, name, None)
            return value if value is not None else getattr(self, name)

        return Limits(
            entry_cooldown=timedelta(seconds=pick("entry_cooldown_s")),
            exit_cooldown=timedelta(seconds=pick("exit_cooldown_s")),
            max_entries_per_bot_hour=pick("max_entries_per_bot_hour"),
            max_entries_per_bot_day=pick("max_entries_per_bot_day"),
            max_entries_all_hour=self.max_entries_all_hour,
            max_entries_all_day=self.max_entries_all_day,
            max_notional_per_bot_day=pick("max_notional_per_bot_day"),
            max_open_positions=self.max_open_positions,
            max_position_notional=pick("max_position_notional"),
            max_order_notional=pick("max_order_notional"),
            min_order_notional=pick("min_order_notional"),
            max_tranches=pick("max_tranches"),
            add_step_pct=pick("add_step_pct"),
            ramp_trades=pick("ramp_trades"),
            ramp_max_notional=pick("ramp_max_notional"),
            max_market_age=_optional_seconds(self.max_market_age_s),
            price_band_pct=pick("price_band_pct"),
            intent_ttl=_optional_seconds(self.intent_ttl_s),
        )

    def breakers_for(self, bot_id: str | None) -> BreakerLimits:
        own = self.bot_limits.get(bot_id, BotLimits()) if bot_id else BotLimits()

        def pick(name: str):
            value = getattr(own, name, None)
            return value if value is not None else getattr(self, name)

        return BreakerLimits(
            losing_exits_in_a_row=pick("losing_exits_in_a_row"),
            daily_loss_per_bot=pick("daily_loss_per_bot"),
            daily_loss_all_bots=self.daily_loss_all_bots,
            weekly_loss_per_bot=pick("weekly_loss_per_bot"),
            order_failures=self.order_failures,
            order_failure_window=timedelta(seconds=self.order_failure_window_s),
            trip_to=self.breaker_trips_to,
            reset_after=_optional_seconds(self.breaker_reset_s),
        )
