"""From a direction and the bot's position to a trade intent, or a reason for none (pure).

flat + buy -> entry; holding + buy -> add (safety owns the tranche cap); holding + sell -> exit of
the whole position; flat + sell -> nothing to sell.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from services.signal.temperature import allows_exit, bands_of, size_factor
from shared.catalog import Bot
from shared.contracts import PositionUpdate, Reason, Side, TradeIntent

INTENT_NAMESPACE = uuid.UUID("6f1c2a52-5d0e-4c35-9a77-3f0a4d1f2b10")


INJECTED = "inject"


def injected_signal_id(bot_id: str, message_id: str) -> str:
    """An injected signal's id, in a namespace of its own per bot. Taken as it came, an
    injected ``message_id`` could claim the id of the service's own next signal (a candle's, a
    standing exit's, the position's stop on the exchange: ``stop:<bot>:<position>:<n>`` is
    predictable), which then stored nothing: a stop never sent; or another bot's injection."""
    signal_id = f"{INJECTED}:{bot_id}:{message_id}"
    if len(signal_id) <= 128:  # an Identifier
        return signal_id
    return f"{INJECTED}:{bot_id}:{hashlib.sha256(message_id.encode()).hexdigest()[:40]}"


def intent_id_for(bot_id: str, signal_id: str) -> str:
    """Deterministic: the same signal for the same bot always yields the same intent id."""
    return str(uuid.uuid5(INTENT_NAMESPACE, f"{bot_id}|{signal_id}"))


@dataclass(frozen=True)
class Market:
    """The latest ticker the signal service saw for a product (no price: ``None``)."""

    price: Decimal
    time: datetime


def decide_intent(
    *,
    bot_id: str,
    bot: Bot,
    side: Side,
    temperature: Decimal,
    signal_id: str,
    signal_time: datetime,
    source: str,
    position: PositionUpdate | None,
    market: Market | None,
    protective: Reason | None = None,
) -> TradeIntent | Reason:
    """The intent a confirmed signal asks for, or the reason it asks for nothing.

    A ``protective`` exit (stop-loss, take-profit, trailing stop) sells the whole position
    whatever the temperature; a signal-driven exit sells ``bot.exit_fraction`` of it.
    """
    band = bands_of(bot).band_of(temperature)
    holding = position is not None and position.status == "open" and position.quantity > 0
    if side == "buy":
        factor = size_factor(band)
        if factor == 0:
            return Reason(
                code="TOO_COLD",
                message=(
                    f"a {band} signal (temperature {temperature}) does not enter; "
                    f"warm needs {bot.cool_below}"
                ),
            )
        action = "add" if holding else "entry"
        sizes = {"quote_size": bot.quote_size * factor}
    else:
        if not holding:
            return Reason(code="NOTHING_TO_SELL", message=f"bot {bot_id} holds no position")
        if protective is None and not allows_exit(band):
            return Reason(
                code="TOO_COLD",
                message=f"a frozen signal (temperature {temperature}) does not exit",
            )
        action = "exit"
        fraction = Decimal(1) if protective is not None else bot.exit_fraction
        assert position is not None  # `holding` says so
        sizes = {"base_size": position.quantity * fraction}
    intent_id = intent_id_for(bot_id, signal_id)
    reason = protective or Reason(
        code="SIGNAL", message=f"{band} {side} signal from {source} (temperature {temperature})"
    )
    return TradeIntent(
        message_id=intent_id,
        correlation_id=intent_id,
        time=market.time if market else signal_time,
        intent_id=intent_id,
        signal_id=signal_id,
        bot_id=bot_id,
        product_id=bot.product_id,
        action=action,
        side=side,
        temperature=temperature,
        band=band,
        reason=reason,
        reference_price=market.price if market else None,
        market_time=market.time if market else None,
        **sizes,
    )
