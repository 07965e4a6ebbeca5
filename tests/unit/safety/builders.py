"""Builders the safety unit tests share: an intent and a state with only what a test changes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.safety.rules import BotState, Limits, Position
from shared.contracts import Reason, TradeIntent

T0 = datetime(2018, 1, 20, 12, 0, tzinfo=UTC)
HOLDING = Position(
    quantity=Decimal("0.1"),
    tranches=1,
    last_entry_price=Decimal("0.09"),
    cost_basis=Decimal("0.009"),
)
LIMITS = Limits(entry_cooldown=timedelta(minutes=5), exit_cooldown=timedelta(minutes=1))


def make_intent(
    action: str = "entry",
    at: datetime = T0,
    priced: bool = True,
    price: str = "0.09",
    size: str | None = None,
    bot: str = "bot-1",
) -> TradeIntent:
    side = "sell" if action == "exit" else "buy"
    sizes = (
        {"base_size": Decimal(size or "0.1")}
        if action == "exit"
        else {"quote_size": Decimal(size or "0.01")}
    )
    return TradeIntent(
        message_id="i",
        correlation_id="i",
        time=at,
        intent_id="i",
        signal_id="s",
        bot_id=bot,
        product_id="ETH-BTC",
        action=action,
        side=side,
        temperature=Decimal(80),
        band="hot",
        reason=Reason(code="SIGNAL", message="test"),
        reference_price=Decimal(price) if priced else None,
        market_time=at if priced else None,
        **sizes,
    )


def state_for(action: str, **changes) -> BotState:
    """A calm state: an exit's bot holds a position, an entry's is flat."""
    base = BotState(position=HOLDING if action in ("exit", "add") else Position())
    return replace(base, **changes)
