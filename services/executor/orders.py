"""Orders (pure): sizing by the product's rules, and the lifecycle events an exchange answer
means."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import Literal

from shared.catalog import Product
from shared.contracts import Fill, OrderApproved, OrderEvent, Reason


@dataclass(frozen=True)
class MarketFill:
    size: Decimal
    """Base currency, rounded down to the product's increment."""
    fee: Decimal
    """Quote currency, rounded up to the quote increment (never undercount a fee)."""


def fill_market_order(
    *,
    price: Decimal,
    quote_size: Decimal | None,
    base_size: Decimal | None,
    product: Product,
    fee_rate: Decimal,
) -> MarketFill | Reason:
    """Fill a market order completely at ``price``; either side may be sized in quote or base,
    and both pay the taker fee in quote currency."""
    raw = base_size if base_size is not None else quote_size / price  # type: ignore[operator]
    size = raw.quantize(product.base_increment, rounding=ROUND_DOWN)
    if size < product.base_min_size:
        return Reason(
            code="BELOW_MIN_SIZE",
            message=(
                f"{size} is below the product's minimum size {product.base_min_size}"
                + (f" (from {quote_size} quote at {price})" if base_size is None else "")
            ),
        )
    if size * price < product.quote_min_size:
        return Reason(
            code="BELOW_MIN_NOTIONAL",
            message=f"{size} at {price} is below the minimum order value {product.quote_min_size}",
        )
    fee = (size * price * fee_rate).quantize(product.quote_increment, rounding=ROUND_UP)
    return MarketFill(size=size, fee=fee)


def lifecycle_events(
    *,
    approval: OrderApproved,
    exchange_order_id: str,
    status: Literal["FILLED", "FAILED"],
    fills: tuple[Fill, ...],
    reason: Reason | None,
    fallback_time: datetime,
) -> list[OrderEvent]:
    """The order events an exchange answer means: ``submitted``, then ``filled`` with its fills or
    ``failed`` with the exchange's reason. Ids are derived from the order and the status, so
    publishing them again is dropped as a duplicate."""
    intent = approval.intent
    common = {
        "correlation_id": intent.intent_id,
        "bot_id": intent.bot_id,
        "product_id": intent.product_id,
        "mode": approval.mode,
        "intent_id": intent.intent_id,
        "client_order_id": approval.client_order_id,
        "exchange_order_id": exchange_order_id,
        "action": intent.action,
        "side": intent.side,
    }
    cid = approval.client_order_id
    events = [
        OrderEvent(
            message_id=f"order-{cid}-submitted", time=approval.time, status="submitted", **common
        )
    ]
    if status == "FILLED":
        events.append(
            OrderEvent(
                message_id=f"order-{cid}-filled",
                time=max(fill.time for fill in fills) if fills else fallback_time,
                status="filled",
                fills=list(fills),
                filled_size=sum((fill.size for fill in fills), Decimal(0)),
                **common,
            )
        )
    else:
        events.append(
            OrderEvent(
                message_id=f"order-{cid}-failed",
                time=fallback_time,
                status="failed",
                reason=reason
                or Reason(code="EXCHANGE_FAILED", message="the exchange failed the order"),
                **common,
            )
        )
    return events


def refusal_event(approval: OrderApproved, reason: Reason) -> OrderEvent:
    """An approval the executor will not place (e.g. made for another mode): failed, with why."""
    intent = approval.intent
    return OrderEvent(
        message_id=f"order-{approval.client_order_id}-failed",
        correlation_id=intent.intent_id,
        time=approval.time,
        bot_id=intent.bot_id,
        product_id=intent.product_id,
        mode=approval.mode,
        intent_id=intent.intent_id,
        client_order_id=approval.client_order_id,
        action=intent.action,
        side=intent.side,
        status="failed",
        reason=reason,
    )
