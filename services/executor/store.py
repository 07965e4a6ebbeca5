"""The executor's record of every order: written before it reaches the exchange and after."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlmodel import Field, Session, SQLModel, col, select

from shared import subjects
from shared.contracts import FINAL_ORDER_STATUSES, OrderEvent
from shared.db import ExactDecimal, UtcDateTime
from shared.money import utc_now
from shared.outbox import stage


class OrderRow(SQLModel, table=True):
    __tablename__ = "executor_orders"

    client_order_id: str = Field(primary_key=True, max_length=64)
    intent_id: str = Field(index=True, max_length=64)
    bot_id: str = Field(index=True, max_length=64)
    product_id: str = Field(max_length=64)
    mode: str = Field(max_length=16)
    action: str = Field(max_length=8)
    side: str = Field(max_length=4)
    quote_size: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    base_size: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    status: str = Field(max_length=24, index=True)
    """``new`` (recorded, not yet confirmed by the exchange) or an order event status."""
    exchange_order_id: str | None = Field(default=None, max_length=64)
    filled_size: Decimal = Field(default=Decimal(0), sa_type=ExactDecimal)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)


def is_final(order: OrderRow) -> bool:
    return order.status in FINAL_ORDER_STATUSES


def record_event(session: Session, order: OrderRow, event: OrderEvent) -> None:
    """Move the order to the event's status and stage the event, in one transaction."""
    order.status = event.status
    order.exchange_order_id = event.exchange_order_id or order.exchange_order_id
    order.filled_size = event.filled_size
    order.updated_at = utc_now()
    session.add(order)
    stage(session, subjects.for_token(subjects.ORDERS_EVENTS, order.bot_id), event)


def open_orders(session: Session) -> list[OrderRow]:
    return list(
        session.exec(
            select(OrderRow).where(col(OrderRow.status).not_in(list(FINAL_ORDER_STATUSES)))
        )
    )


def recent_orders(session: Session, limit: int = 50) -> list[OrderRow]:
    return list(
        session.exec(select(OrderRow).order_by(col(OrderRow.created_at).desc()).limit(limit))
    )
