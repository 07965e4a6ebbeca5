"""What the signal service keeps per bot while it runs: candles, the blend of its signals, its
confirmation, and the highest price since its position opened (for a trailing stop)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from services.signal.blend import Blend, Weighted
from services.signal.candles import CandleBuilder
from services.signal.confirmation import Confirmation
from services.signal.signals import create
from shared.catalog import Bot


@dataclass
class BotRuntime:
    candles: CandleBuilder
    blend: Blend | None
    confirmation: Confirmation
    highest: dict[str, Decimal] = field(default_factory=dict)
    """Highest price seen per position id."""
    temperature: Decimal = Decimal(0)
    """The latest evaluation's temperature."""


def runtime_for(bot_id: str, bot: Bot) -> BotRuntime:
    """Build a bot's signals from its configuration; a bad one is a ValueError naming the bot."""
    try:
        blend = (
            Blend(
                [Weighted(create(s.name, dict(s.params)), s.weight) for s in bot.signals],
                buy_threshold=bot.buy_threshold,
                sell_threshold=bot.sell_threshold,
            )
            if bot.signals
            else None
        )
    except ValueError as error:
        raise ValueError(f"bot {bot_id}: {error}") from None
    return BotRuntime(
        candles=CandleBuilder(timedelta(seconds=bot.candle_s)),
        blend=blend,
        confirmation=Confirmation(bot.confirm_evaluations, timedelta(seconds=bot.confirm_seconds)),
    )
