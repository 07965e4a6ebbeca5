"""The mock exchange's stop-limit orders, as Coinbase documents ``stop_limit_stop_limit_gtc``.

A stop-limit order rests untriggered (status ``OPEN``) until the last trade price reaches its
stop price (down to it for a sell stop, ``STOP_DIRECTION_STOP_DOWN``; up to it for a buy stop);
from that tick on it is a limit order at its limit price: it fills at once when that price is
marketable, else it rests, and it may fill in parts. A market that gaps through the limit leaves
it resting unfilled (docs/safety.md says what happens then).

The stop price lives in a table of its own beside ``mock_exchange_orders_v2`` (whose row holds the
order as the limit order it becomes): create_all adds a missing table but never a column.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Final

from sqlmodel import Field, Session, SQLModel, col, select

from shared.db import ExactDecimal, UtcDateTime

STOP_LIMIT: Final = "stop_limit"


class MockStopRow(SQLModel, table=True):
    __tablename__ = "mock_exchange_stops_v1"

    client_order_id: str = Field(primary_key=True, max_length=128)
    stop_price: Decimal = Field(sa_type=ExactDecimal)
    triggered_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    """The market time of the tick that triggered it; ``None``: it waits for its stop price."""


def reaches_stop(side: str, stop_price: Decimal, price: Decimal) -> bool:
    """Whether a last trade at ``price`` triggers a stop: a sell stop when the price falls to its
    stop, a buy stop when it rises to it."""
    return price <= stop_price if side == "sell" else price >= stop_price


def stop_refusal(side: str, stop_price: Decimal, last_price: Decimal) -> tuple[str, str] | None:
    """Coinbase refuses a stop that would trigger at once (the market is already through it)."""
    if reaches_stop(side, stop_price, last_price):
        above = "above" if side == "sell" else "below"
        return (
            f"STOP_PRICE_{above.upper()}_LAST_TRADE_PRICE",
            f"the stop price {stop_price} is at or {above} the last trade price {last_price}",
        )
    return None


def stops_of(session: Session, client_order_ids: list[str]) -> dict[str, MockStopRow]:
    if not client_order_ids:
        return {}
    rows = session.exec(
        select(MockStopRow).where(col(MockStopRow.client_order_id).in_(client_order_ids))
    ).all()
    return {row.client_order_id: row for row in rows}
