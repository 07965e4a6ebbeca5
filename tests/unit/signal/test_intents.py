"""From a direction and a position to an intent: entry, add, exit, or a reason for nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.signal.intents import Market, decide_intent, intent_id_for
from services.signal.temperature import band_of
from shared.catalog import Bot
from shared.contracts import PositionUpdate, Reason, TradeIntent

NOW = datetime(2018, 1, 20, 12, 0, tzinfo=UTC)
BOT = Bot(product_id="ETH-BTC", quote_size=Decimal("0.01"))
MARKET = Market(price=Decimal("0.09"), time=NOW)


def position(quantity: str) -> PositionUpdate:
    return PositionUpdate(
        message_id="p",
        correlation_id="p",
        time=NOW,
        bot_id="bot-1",
        product_id="ETH-BTC",
        mode="mock",
        position_id="bot-1-mock-1" if Decimal(quantity) else None,
        status="open" if Decimal(quantity) else "flat",
        quantity=Decimal(quantity),
        average_entry_price=Decimal("0.09") if Decimal(quantity) else None,
        break_even_price=None,
        cost_basis=Decimal(0),
        realized_pnl=Decimal(0),
        fees_paid=Decimal(0),
        tranches=[],
        sequence=1,
    )


def decide(side: str, held: PositionUpdate | None = None, temperature: int = 80, market=MARKET):
    return decide_intent(
        bot_id="bot-1",
        bot=BOT,
        side=side,
        temperature=Decimal(temperature),
        signal_id="sig-1",
        signal_time=NOW,
        source="test",
        position=held,
        market=market,
    )


@pytest.mark.parametrize(
    ("side", "held", "action"),
    [
        ("buy", None, "entry"),
        ("buy", position("0"), "entry"),
        ("buy", position("2"), "add"),
        ("sell", position("2"), "exit"),
    ],
)
def test_the_position_decides_the_action(
    side: str, held: PositionUpdate | None, action: str
) -> None:
    intent = decide(side, held)
    assert isinstance(intent, TradeIntent)
    assert intent.action == action


def test_an_exit_sells_the_whole_position() -> None:
    intent = decide("sell", position("2.5"))
    assert isinstance(intent, TradeIntent)
    assert intent.base_size == Decimal("2.5") and intent.quote_size is None


def test_nothing_to_sell_when_flat() -> None:
    outcome = decide("sell", None)
    assert isinstance(outcome, Reason) and outcome.code == "NOTHING_TO_SELL"


@pytest.mark.parametrize(
    ("temperature", "band", "quote_size"),
    [
        (10, "frozen", None),
        (30, "cool", None),
        (60, "warm", "0.005"),
        (75, "hot", "0.01"),
        (100, "hot", "0.01"),
    ],
)
def test_temperature_bands_gate_and_size_entries(
    temperature: int, band: str, quote_size: str | None
) -> None:
    assert band_of(Decimal(temperature)) == band
    outcome = decide("buy", temperature=temperature)
    if quote_size is None:
        assert isinstance(outcome, Reason) and outcome.code == "TOO_COLD"
    else:
        assert isinstance(outcome, TradeIntent) and outcome.quote_size == Decimal(quote_size)


def test_a_cool_signal_may_exit_but_a_frozen_one_may_not() -> None:
    assert isinstance(decide("sell", position("1"), temperature=30), TradeIntent)
    assert isinstance(decide("sell", position("1"), temperature=10), Reason)


def test_the_intent_carries_market_price_and_event_time() -> None:
    intent = decide("buy")
    assert isinstance(intent, TradeIntent)
    assert intent.reference_price == Decimal("0.09") and intent.market_time == NOW


def test_without_a_price_the_intent_says_so_and_safety_rejects_it() -> None:
    intent = decide("buy", market=None)
    assert isinstance(intent, TradeIntent)
    assert intent.reference_price is None and intent.market_time is None


def test_the_same_signal_always_makes_the_same_intent_id() -> None:
    first, again = decide("buy"), decide("buy")
    assert isinstance(first, TradeIntent) and isinstance(again, TradeIntent)
    assert first.intent_id == again.intent_id == intent_id_for("bot-1", "sig-1")
    assert intent_id_for("bot-2", "sig-1") != first.intent_id
