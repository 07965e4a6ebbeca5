"""The mock exchange: follows Coinbase's rules that matter to correctness.

* A repeated ``client_order_id`` returns the existing order, never a second one (its book is
  stored in the executor's database, so this holds across restarts, as it does on Coinbase).
* Sizes follow the product's increments and minimums; fees are charged in quote currency.
* It fills market orders at the latest market price it was given, stamped with that price's
  event time; with no price it fails the order: there is never a default price.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from sqlalchemy import Engine
from sqlmodel import Field, Session, SQLModel

from services.executor.orders import MarketFill, fill_market_order
from shared.catalog import Product
from shared.contracts import Fill, Reason, Side
from shared.db import ExactDecimal, UtcDateTime

MOCK_NAMESPACE = uuid.UUID("9a4f3e6b-2c1d-4e8f-a7b6-5c4d3e2f1a09")


@dataclass(frozen=True)
class Quote:
    price: Decimal
    time: datetime


@dataclass(frozen=True)
class ExchangeOrder:
    exchange_order_id: str
    client_order_id: str
    status: Literal["FILLED", "FAILED"]
    fills: tuple[Fill, ...]
    reason: Reason | None


class MockOrderRow(SQLModel, table=True):
    __tablename__ = "mock_exchange_orders"

    client_order_id: str = Field(primary_key=True, max_length=64)
    exchange_order_id: str = Field(max_length=64)
    product_id: str = Field(max_length=64)
    side: str = Field(max_length=4)
    status: str = Field(max_length=16)
    trade_id: str | None = Field(default=None, max_length=64)
    price: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    size: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    fee: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    filled_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    reason_code: str | None = Field(default=None, max_length=64)
    reason: str | None = Field(default=None, max_length=500)


def _as_order(row: MockOrderRow) -> ExchangeOrder:
    fills: tuple[Fill, ...] = ()
    if row.status == "FILLED":
        fills = (
            Fill(
                trade_id=row.trade_id,
                price=row.price,
                size=row.size,
                fee=row.fee,
                liquidity="taker",
                time=row.filled_at,
            ),
        )
    reason = Reason(code=row.reason_code, message=row.reason) if row.reason_code else None
    return ExchangeOrder(row.exchange_order_id, row.client_order_id, row.status, fills, reason)  # type: ignore[arg-type]


class MockExchange:
    def __init__(
        self,
        engine: Engine,
        products: dict[str, Product],
        fee_rate: Decimal,
        quote_of: Callable[[str], Quote | None],
    ):
        self._engine = engine
        self._products = products
        self._fee_rate = fee_rate
        self._quote_of = quote_of

    def place_market_order(
        self,
        *,
        client_order_id: str,
        product_id: str,
        side: Side,
        quote_size: Decimal | None,
        base_size: Decimal | None,
    ) -> ExchangeOrder:
        """Place (or, for a known ``client_order_id``, return) a market order. Blocking."""
        with Session(self._engine) as session:
            existing = session.get(MockOrderRow, client_order_id)
            if existing is not None:
                return _as_order(existing)
            row = MockOrderRow(
                client_order_id=client_order_id,
                exchange_order_id=str(uuid.uuid5(MOCK_NAMESPACE, client_order_id)),
                product_id=product_id,
                side=side,
                status="FAILED",
            )
            outcome = self._fill(product_id, quote_size, base_size)
            if isinstance(outcome, Reason):
                row.reason_code, row.reason = outcome.code, outcome.message
            else:
                filled, quote = outcome
                row.status = "FILLED"
                row.trade_id = str(uuid.uuid5(MOCK_NAMESPACE, f"{client_order_id}:fill:1"))
                row.price, row.size, row.fee = quote.price, filled.size, filled.fee
                row.filled_at = quote.time
            session.add(row)
            session.commit()
            return _as_order(row)

    def _fill(
        self, product_id: str, quote_size: Decimal | None, base_size: Decimal | None
    ) -> tuple[MarketFill, Quote] | Reason:
        product = self._products.get(product_id)
        if product is None:
            return Reason(code="UNKNOWN_PRODUCT", message=f"{product_id} is not traded here")
        quote = self._quote_of(product_id)
        if quote is None:
            return Reason(
                code="NO_MARKET_PRICE",
                message=f"no market price for {product_id}: no price, no trade",
            )
        filled = fill_market_order(
            price=quote.price,
            quote_size=quote_size,
            base_size=base_size,
            product=product,
            fee_rate=self._fee_rate,
        )
        return filled if isinstance(filled, Reason) else (filled, quote)
