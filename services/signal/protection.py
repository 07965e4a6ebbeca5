"""Protective exits (pure): stop-loss, take-profit and a trailing stop, measured from the
position's break-even price (trailing: from the highest price since the position opened).

They act on every tick, whatever the temperature or the confirmation: they protect money.
"""

from __future__ import annotations

from decimal import Decimal

from shared.catalog import Bot
from shared.contracts import PositionUpdate, Reason

HUNDRED = Decimal(100)


def protective_exit(
    bot: Bot, position: PositionUpdate | None, price: Decimal, highest: Decimal | None
) -> Reason | None:
    """The protective exit ``price`` triggers for an open position, or ``None``."""
    if position is None or position.status != "open" or position.break_even_price is None:
        return None
    even = position.break_even_price
    if bot.stop_loss_pct is not None and price <= even * (1 - bot.stop_loss_pct / HUNDRED):
        return Reason(
            code="STOP_LOSS",
            message=f"{price} is {bot.stop_loss_pct} % or more below break-even {even}",
        )
    if bot.take_profit_pct is not None and price >= even * (1 + bot.take_profit_pct / HUNDRED):
        return Reason(
            code="TAKE_PROFIT",
            message=f"{price} is {bot.take_profit_pct} % or more above break-even {even}",
        )
    if (
        bot.trailing_stop_pct is not None
        and highest is not None
        and highest > even
        and price <= highest * (1 - bot.trailing_stop_pct / HUNDRED)
    ):
        return Reason(
            code="TRAILING_STOP",
            message=f"{price} fell {bot.trailing_stop_pct} % or more from the high {highest}",
        )
    return None
