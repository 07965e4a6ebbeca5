"""Protective exits from the break-even price, on every tick, whatever the temperature."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.signal.intents import decide_intent
from services.signal.protection import protective_exit
from shared.catalog import Bot
from shared.contracts import PositionUpdate, Reason, TradeIntent

NOW = datetime(2018, 1, 20, tzinfo=UTC)
BOT = Bot(
    product_id="ETH-BTC",
    quote_size=Decimal("0.01"),
    stop_loss_pct=Decimal(2),
    take_profit_pct=Decimal(5),
    trailing_stop_pct=Decimal(1),
)


def position(break_even: str = "100", quantity: str = "2") -> PositionUpdate:
    return PositionUpdate(
        message_id="p", correlation_id="p", time=NOW, bot_id="b", product_id="ETH-BTC",
        mode="mock", position_id="b-mock-1", status="open", quantity=Decimal(quantity),
        average_entry_price=Decimal(break_even), break_even_price=Decimal(break_even),
        cost_basis=Decimal(break_even) * Decimal(quantity), realized_pnl=Decimal(0),
        fees_paid=Decimal(0), tranches=[], sequence=1,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("price", "highest", "code"),
    [
        ("98.01", None, None),
        ("98", None, "STOP_LOSS"),
        ("104.99", None, None),
        ("105", None, "TAKE_PROFIT"),
        ("103", "104", None),  # 1 % below the high of 104 is 102.96: 103 holds
        ("102.96", "104", "TRAILING_STOP"),
        ("99.5", "99.9", None),  # the trail arms only once the price has been above break-even
    ],
)
def test_protective_exits(price: str, highest: str | None, code: str | None) -> None:
    reason = protective_exit(BOT, position(), Decimal(price), Decimal(highest) if highest else None)
    assert (reason.code if reason else None) == code


def test_no_position_nothing_to_protect() -> None:
    assert protective_exit(BOT, None, Decimal(1), None) is None


def test_a_protective_exit_sells_everything_even_when_frozen() -> None:
    stop = Reason(code="STOP_LOSS", message="down 2 %")
    intent = decide_intent(
        bot_id="b", bot=BOT.model_copy(update={"exit_fraction": Decimal("0.5")}), side="sell",
        temperature=Decimal(0), signal_id="protect:1", signal_time=NOW, source="STOP_LOSS",
        position=position(), market=None, protective=stop,
    )  # fmt: skip
    assert isinstance(intent, TradeIntent)
    assert intent.base_size == Decimal(2) and intent.reason == stop


def test_a_signal_driven_exit_sells_the_configured_fraction() -> None:
    intent = decide_intent(
        bot_id="b", bot=BOT.model_copy(update={"exit_fraction": Decimal("0.5")}), side="sell",
        temperature=Decimal(80), signal_id="s", signal_time=NOW, source="signals",
        position=position(), market=None,
    )  # fmt: skip
    assert isinstance(intent, TradeIntent) and intent.base_size == Decimal(1)
