"""Safety's decision: every reason that applies, cooldowns in event time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.safety.rules import BotState, Limits, client_order_id_for, decide, decision_time
from shared.contracts import Reason, TradeIntent

T0 = datetime(2018, 1, 20, 12, 0, tzinfo=UTC)
LIMITS = Limits(entry_cooldown=timedelta(minutes=5), exit_cooldown=timedelta(minutes=1))


def make_intent(action: str = "entry", at: datetime = T0, priced: bool = True) -> TradeIntent:
    side = "sell" if action == "exit" else "buy"
    sizes = {"base_size": Decimal(1)} if action == "exit" else {"quote_size": Decimal("0.01")}
    return TradeIntent(
        message_id="i",
        correlation_id="i",
        time=at,
        intent_id="i",
        signal_id="s",
        bot_id="bot-1",
        product_id="ETH-BTC",
        action=action,
        side=side,
        temperature=Decimal(80),
        band="hot",
        reason=Reason(code="SIGNAL", message="test"),
        reference_price=Decimal("0.09") if priced else None,
        market_time=at if priced else None,
        **sizes,
    )


def codes(intent: TradeIntent, state: BotState) -> list[str]:
    return [reason.code for reason in decide(intent, state, LIMITS, decision_time(intent)).reasons]


@pytest.mark.parametrize(
    ("action", "state", "minutes_later", "expected"),
    [
        ("entry", BotState(), 0, []),
        ("entry", BotState(last_entry_at=T0), 4, ["ENTRY_COOLDOWN"]),
        ("entry", BotState(last_entry_at=T0), 5, []),
        ("add", BotState(last_entry_at=T0), 1, ["ENTRY_COOLDOWN"]),
        ("exit", BotState(last_entry_at=T0), 1, []),
        ("entry", BotState(last_exit_at=T0), 0.5, ["EXIT_COOLDOWN"]),
        ("exit", BotState(last_exit_at=T0), 0.5, ["EXIT_COOLDOWN"]),
        (
            "entry",
            BotState(last_entry_at=T0, last_exit_at=T0),
            0.5,
            ["ENTRY_COOLDOWN", "EXIT_COOLDOWN"],
        ),
    ],
)
def test_cooldowns(action: str, state: BotState, minutes_later: float, expected: list[str]) -> None:
    intent = make_intent(action, at=T0 + timedelta(minutes=minutes_later))
    assert codes(intent, state) == expected


def test_no_price_no_trade() -> None:
    assert codes(make_intent(priced=False), BotState()) == ["NO_MARKET_DATA"]


def test_every_reason_is_reported_not_only_the_first() -> None:
    intent = make_intent(priced=False, at=T0 + timedelta(seconds=10))
    got = codes(intent, BotState(last_entry_at=T0, last_exit_at=T0))
    assert got == ["NO_MARKET_DATA", "ENTRY_COOLDOWN", "EXIT_COOLDOWN"]


def test_a_rejection_says_how_long_to_wait() -> None:
    intent = make_intent(at=T0 + timedelta(minutes=3, seconds=30))
    (reason,) = decide(intent, BotState(last_entry_at=T0), LIMITS, decision_time(intent)).reasons
    assert "1m30s to go" in reason.message and "5m00s apart" in reason.message


def test_an_approval_moves_the_right_clock() -> None:
    later = T0 + timedelta(hours=1)
    entry = decide(make_intent("entry", later), BotState(), LIMITS, later)
    assert entry.approved and entry.state_after == BotState(last_entry_at=later)
    exit_ = decide(make_intent("exit", later), BotState(last_entry_at=T0), LIMITS, later)
    assert exit_.state_after == BotState(last_entry_at=T0, last_exit_at=later)


def test_a_rejection_leaves_the_state_alone() -> None:
    state = BotState(last_entry_at=T0)
    decision = decide(make_intent(at=T0), state, LIMITS, T0)
    assert not decision.approved and decision.state_after == state


def test_cooldowns_use_market_time_not_the_wall_clock() -> None:
    # An intent made in 2018 market time is judged in 2018, whatever today's date is.
    assert decision_time(make_intent(at=T0)) == T0


def test_client_order_id_is_derived_from_the_intent() -> None:
    assert client_order_id_for("intent-1") == client_order_id_for("intent-1")
    assert client_order_id_for("intent-1") != client_order_id_for("intent-2")
