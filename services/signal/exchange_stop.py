"""The intent that asks for a position's protective stop on the exchange (pure).

The stop itself (size, stop and limit price) is :func:`shared.stops.desired_stop`'s; this module
turns it into a ``stop_limit`` exit intent named by the position and its sequence
(:func:`shared.stops.stop_intent_id`), so the same state of a position always asks for the same
stop and a retry, a redelivery or a restart never places a second one. Safety approves it like any
protective exit; the executor replaces the live stop with it (cancel confirmed first) and cancels
it before any other sell (services/executor/protective.py).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from services.signal.intents import Market
from services.signal.temperature import bands_of
from shared.catalog import Bot, Product
from shared.contracts import PositionUpdate, Reason, TradeIntent
from shared.exits import STOP_ON_EXCHANGE
from shared.stops import StopOrder, desired_stop, stop_intent_id

MAX_ATTEMPTS: Final = 3
"""Stops asked for one state of a position, at most: an exchange that keeps refusing leaves the
signal service's own stop-loss to protect it, and says so."""
MEANT: Final = frozenset({"STOP_BEFORE_SELL", "HALT"})
"""Why a stop was cancelled on purpose: before another sell (the position changes; its next state
asks again) or by ``tranche halt --cancel-stops``. Any other end is asked again."""


def asks_again(status: str, reason_code: str | None, attempts: int) -> bool:
    """Whether a stop that ended (``cancelled``, ``expired``, ``failed``: refused by the exchange,
    cancelled from outside) is asked again for the same state of the position."""
    ended = status in ("cancelled", "expired", "failed")
    return ended and reason_code not in MEANT and attempts < MAX_ATTEMPTS


def stop_intent(
    *,
    bot_id: str,
    bot: Bot,
    position: PositionUpdate | None,
    product: Product | None,
    market: Market | None,
    temperature: Decimal,
    attempt: int = 0,
) -> TradeIntent | Reason | None:
    """The stop intent the position asks for now, why it asks for none (a reason), or ``None``
    (the bot keeps no stop on the exchange, or holds nothing)."""
    if not bot.stop_on_exchange:
        return None
    if product is None:
        return Reason(code="UNKNOWN_PRODUCT", message=f"{bot.product_id} has no trading rules")
    wanted = desired_stop(bot, position, product)
    if not isinstance(wanted, StopOrder):
        return wanted
    assert position is not None and position.position_id is not None  # a stop is wanted
    if market is None:
        return Reason(code="NO_MARKET_DATA", message=f"no price for {bot.product_id} yet")
    if market.price <= wanted.stop_price:
        return Reason(
            code="STOP_ALREADY_THROUGH",
            message=(
                f"{market.price} is at or below the stop {wanted.stop_price}: the exchange would "
                "refuse it; the signal service's stop-loss acts"
            ),
        )
    intent_id = stop_intent_id(bot_id, position.position_id, position.sequence, attempt)
    return TradeIntent(
        message_id=intent_id,
        correlation_id=intent_id,
        time=market.time,
        intent_id=intent_id,
        signal_id=intent_id,
        bot_id=bot_id,
        product_id=bot.product_id,
        action="exit",
        side="sell",
        base_size=wanted.size,
        temperature=temperature,
        band=bands_of(bot).band_of(temperature),
        reason=Reason(
            code=STOP_ON_EXCHANGE,
            message=(
                f"protective stop on the exchange: sell {wanted.size} if the price falls to "
                f"{wanted.stop_price} (limit {wanted.limit_price}), {bot.stop_loss_pct} % below "
                f"break-even {position.break_even_price}"
            ),
        ),
        reference_price=market.price,
        market_time=market.time,
        order_type="stop_limit",
        limit_price=wanted.limit_price,
        stop_price=wanted.stop_price,
    )
