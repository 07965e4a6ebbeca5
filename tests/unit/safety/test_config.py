"""Safety's settings: global defaults, per-bot overrides, and production only with the opt-in."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from services.safety.app import build
from services.safety.config import SafetySettings


def test_a_bot_override_changes_that_bot_only() -> None:
    settings = SafetySettings(
        bot_limits={"careful": {"max_entries_per_bot_hour": 1, "add_step_pct": "1.5"}},
        entry_cooldown_s=120,
    )
    careful, other = settings.limits_for("careful"), settings.limits_for("other")
    assert careful.max_entries_per_bot_hour == 1 and careful.add_step_pct == Decimal("1.5")
    assert other.max_entries_per_bot_hour == 6 and other.add_step_pct == 0
    assert careful.entry_cooldown == other.entry_cooldown == timedelta(minutes=2)


def test_per_bot_overrides_come_from_json_in_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("TRANCHE_BOT_LIMITS", '{"b": {"losing_exits_in_a_row": 5}}')
    settings = SafetySettings()
    assert settings.breakers_for("b").losing_exits_in_a_row == 5
    assert settings.breakers_for("c").losing_exits_in_a_row == 3


def test_an_unknown_override_is_refused() -> None:
    with pytest.raises(ValueError, match="extra"):
        SafetySettings(bot_limits={"b": {"max_leverage": 10}})


def test_zero_switches_the_time_based_checks_off() -> None:
    limits = SafetySettings(intent_ttl_s=0, max_market_age_s=0).limits_for("b")
    assert limits.intent_ttl is None and limits.max_market_age is None


def test_production_needs_the_live_trading_confirmation(tmp_path) -> None:
    bare = SafetySettings(mode="production", data_dir=tmp_path)
    assert len(bare.production_opt_in_missing()) == 1
    with pytest.raises(SystemExit, match="TRANCHE_LIVE_TRADING_CONFIRMED"):
        build(bare)


def test_production_safety_needs_no_exchange_credentials(tmp_path) -> None:
    """Safety never calls Coinbase: the secret stays with the executor alone (issue 17, item 6)."""
    ready = SafetySettings(mode="production", data_dir=tmp_path, live_trading_confirmed=True)
    assert ready.production_opt_in_missing() == []
    build(ready).engine.dispose()
