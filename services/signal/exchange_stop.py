"""The intent that asks for a position's protective stop on the exchange (pure).

The stop itself (size, stop and limit price) is :func:`shared.stops.desired_stop`'s; this module
turns it into a ``stop_limit`` exit intent named by the position and its sequence
(:func:`shared.stops.stop_intent_id`), so the same state of a position always asks for the same
stop and a retry, a redelivery or a restart never places a second one. Safety approves it like any
protective exit; the executor replaces the live stop with it (cancel confirmed first) and cancels
it before any other sell (services/executor/protective.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Final

from services.signal.intents import Market
from services.signal.temperature import bands_of
from shared.catalog import Bot, Product
from shared.contracts import FINAL_ORDER_STATUSES, PositionUpdate, Reason, TradeIntent
from shared.exits import STOP_ON_EXCHANGE
from shared.stops import StopOrder, desired_stop, stop_intent_id

MAX_ATTEMPTS: Final = 3
"""Stops asked for one state of a position, at most: an exchange that keeps refusing leaves the
signal service's own stop-loss to protect it, and says so."""
MEANT: Final = frozenset({"STOP_BEFORE_SELL", "HALT"})
"""Why a stop was cancelled on purpose: before another sell (the position changes; its next state
asks again) or by ``tranche halt --cancel-stops``. Any other end is asked again."""


STANDS_DOWN: Final = "STOP_LOSS"
"""The one exit of the signal service's own that a live stop on the exchange stands in for: its
stop-loss. Take-profit, trailing stop, signal sells and flatten act as before (their sell cancels
the stop first)."""
LIVE: Final = frozenset({"open", "partially_filled"})
"""Order statuses in which the exchange holds the stop (untriggered, or triggered and filling)."""


@dataclass(frozen=True)
class ExchangeStop:
    """The stop this service last asked for a bot, as its order events tell it: ``status`` is
    ``asked`` until the first event, then the order's (``open`` once the exchange holds it)."""

    intent_id: str
    position_id: str
    sequence: int
    order: StopOrder
    status: str = "asked"

    def heard(self, status: str) -> ExchangeStop:
        """The stop after an order event of it: a final status is never undone by a late one."""
        if self.status in FINAL_ORDER_STATUSES or status == self.status:
            return self
        return replace(self, status=status)


def stands_down(
    trigger: Reason | None,
    position: PositionUpdate | None,
    stop: ExchangeStop | None,
    price: Decimal,
) -> bool:
    """Whether the signal service's own ``trigger`` stands down at ``price`` because the exchange
    holds the position's stop: only a stop-loss, only while the stop asked for this very state of
    the position is live on the exchange (``open``, or triggered and ``partially_filled``), and
    only while ``price`` is above the stop's *limit*. At or below its limit a stop-limit may rest
    unfilled (the price gapped through it): the signal's exit takes over, and its sell cancels
    the stop first. A stop that *filled* for this very state sold the holding: the stop-loss
    stands down at any price until the flat position arrives (a sell asked in between would only
    be refused, or race the ledger). Before the exchange confirms the stop, once it ended
    otherwise (cancelled, expired, failed) or was refused, the signal's stop-loss acts as if there
    were none.

    Pure: the price is the tick's, the stop's status its order events'; no clock."""
    if (
        trigger is None
        or trigger.code != STANDS_DOWN
        or position is None
        or stop is None
        or (stop.position_id, stop.sequence) != (position.position_id, position.sequence)
    ):
        return False
    return stop.status == "filled" or (stop.status in LIVE and price > stop.order.limit_price)


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
