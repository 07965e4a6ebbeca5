"""A product's trading rules as the exchange publishes them (``get_product``), and whether an
order may be sent for it (pure).

In production the executor sizes, rounds and checks minimums with these rules, not the bots
file's: Coinbase changes increments and minimums, and an order at a precision it refuses, or
below its real minimum, must never be approved and sent. The bots file's rules stay for mock mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from shared.catalog import Product
from shared.contracts import Reason


@dataclass(frozen=True)
class ProductRules:
    """What Coinbase says about one product (``GET /api/v3/brokerage/products/{id}``)."""

    product_id: str
    base_increment: Decimal
    quote_increment: Decimal
    base_min_size: Decimal
    quote_min_size: Decimal
    base_max_size: Decimal | None = None
    quote_max_size: Decimal | None = None
    status: str = "online"
    is_disabled: bool = False
    trading_disabled: bool = False
    cancel_only: bool = False
    limit_only: bool = False
    post_only: bool = False
    fetched_at: datetime | None = None

    def as_product(self) -> Product:
        """The rules the sizing uses (:func:`services.executor.orders.size_order`)."""
        return Product(
            base_min_size=self.base_min_size,
            base_increment=self.base_increment,
            quote_increment=self.quote_increment,
            quote_min_size=self.quote_min_size,
        )


def tradable_refusal(
    product_id: str, rules: ProductRules | None, order_type: str, post_only: bool = False
) -> Reason | None:
    """Why the exchange would refuse any order of this type for this product now, in one
    sentence; ``None``: it may be sent (sizes are checked next). ``post_only``: whether the
    order would be sent post-only (the executor sends limit orders without it)."""
    if rules is None:
        return Reason(
            code="PRODUCT_NOT_LISTED",
            message=f"the exchange does not list {product_id}: no order for it",
        )
    if rules.is_disabled or rules.trading_disabled or rules.status.lower() not in ("online", ""):
        return Reason(
            code="PRODUCT_DISABLED",
            message=f"{product_id} is disabled on the exchange (status {rules.status}): no order",
        )
    if rules.cancel_only:
        return Reason(
            code="PRODUCT_CANCEL_ONLY",
            message=f"{product_id} is cancel-only on the exchange: no new orders",
        )
    if rules.limit_only and order_type != "limit":
        return Reason(
            code="PRODUCT_LIMIT_ONLY",
            message=f"{product_id} is limit-only on the exchange: a {order_type} order is refused",
        )
    if rules.post_only and not (order_type == "limit" and post_only):
        return Reason(
            code="PRODUCT_POST_ONLY",
            message=(
                f"{product_id} is post-only on the exchange: only post-only limit orders are "
                f"accepted, not this {order_type} order"
            ),
        )
    return None


def above_maximum(rules: ProductRules, base_size: Decimal | None, quote_size: Decimal | None):
    """A size above the product's maximum, in one sentence (``None``: within it)."""
    if base_size is not None and rules.base_max_size and base_size > rules.base_max_size:
        return Reason(
            code="ABOVE_MAX_SIZE",
            message=f"{base_size} is above {rules.product_id}'s maximum size {rules.base_max_size}",
        )
    if quote_size is not None and rules.quote_max_size and quote_size > rules.quote_max_size:
        return Reason(
            code="ABOVE_MAX_NOTIONAL",
            message=(
                f"{quote_size} is above {rules.product_id}'s maximum order value "
                f"{rules.quote_max_size}"
            ),
        )
    return None
