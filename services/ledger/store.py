"""The ledger's facts (fills) and what is derived from them (the latest position per bot)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlmodel import Field, Session, SQLModel, col, select

from services.ledger.accounting import LedgerFill
from shared import subjects
from shared.contracts import Fill, OrderEvent, PositionUpdate
from shared.db import ExactDecimal, UtcDateTime
from shared.outbox import stage, stage_kv


class FillRow(SQLModel, table=True):
    __tablename__ = "ledger_fills"

    trade_id: str = Field(primary_key=True, max_length=128)
    bot_id: str = Field(index=True, max_length=64)
    mode: str = Field(max_length=16)
    product_id: str = Field(max_length=64)
    intent_id: str = Field(max_length=64)
    client_order_id: str = Field(index=True, max_length=64)
    side: str = Field(max_length=4)
    price: Decimal = Field(sa_type=ExactDecimal)
    size: Decimal = Field(sa_type=ExactDecimal)
    fee: Decimal = Field(sa_type=ExactDecimal)
    liquidity: str = Field(max_length=8)
    time: datetime = Field(sa_type=UtcDateTime)
    order_event_id: str = Field(max_length=200)


class PositionRow(SQLModel, table=True):
    __tablename__ = "ledger_positions"

    bot_id: str = Field(primary_key=True, max_length=64)
    mode: str = Field(primary_key=True, max_length=16)
    sequence: int
    payload: str
    """The latest :class:`PositionUpdate` as JSON."""


def lock_position(session: Session, bot_id: str, mode: str) -> None:
    """Book one bot at a time across ledger instances: the bot's position row is locked (PostgreSQL
    ``FOR UPDATE``) until the transaction ends, so a second instance booking another fill of the
    same bot waits and then recomputes from both fills, instead of overwriting the position with
    one that misses the first. A bot's first fill has no row to lock: two first bookings at once
    collide on the row's key and one is retried. SQLite serializes writers by itself."""
    session.exec(
        select(PositionRow.bot_id)
        .where(PositionRow.bot_id == bot_id, PositionRow.mode == mode)
        .with_for_update()
    ).first()


def new_fills(session: Session, event: OrderEvent) -> list[Fill]:
    """The event's fills not booked yet (a fill is identified by its trade id)."""
    return [fill for fill in event.fills if session.get(FillRow, fill.trade_id) is None]


def add_fills(session: Session, event: OrderEvent, fills: list[Fill]) -> None:
    for fill in fills:
        session.add(
            FillRow(
                trade_id=fill.trade_id,
                bot_id=event.bot_id,
                mode=event.mode,
                product_id=event.product_id,
                intent_id=event.intent_id,
                client_order_id=event.client_order_id,
                side=event.side,
                price=fill.price,
                size=fill.size,
                fee=fill.fee,
                liquidity=fill.liquidity,
                time=fill.time,
                order_event_id=event.message_id,
            )
        )
    session.flush()


def fills_of(session: Session, bot_id: str, mode: str) -> list[FillRow]:
    return list(
        session.exec(
            select(FillRow)
            .where(FillRow.bot_id == bot_id, FillRow.mode == mode)
            .order_by(col(FillRow.time), col(FillRow.trade_id))
        )
    )


def bots_with_fills(session: Session, mode: str) -> list[str]:
    return list(
        session.exec(
            select(FillRow.bot_id).where(FillRow.mode == mode).distinct().order_by(FillRow.bot_id)
        )
    )


def as_ledger_fill(row: FillRow) -> LedgerFill:
    return LedgerFill(
        trade_id=row.trade_id,
        client_order_id=row.client_order_id,
        side=row.side,  # type: ignore[arg-type]
        price=Decimal(row.price),
        size=Decimal(row.size),
        fee=Decimal(row.fee),
        time=row.time,
    )


def save_position(session: Session, position: PositionUpdate) -> None:
    """Store the position and stage it for the positions subject and bucket, in one transaction."""
    row = session.get(PositionRow, (position.bot_id, position.mode)) or PositionRow(
        bot_id=position.bot_id, mode=position.mode, sequence=0, payload=""
    )
    row.sequence, row.payload = position.sequence, position.model_dump_json()
    session.add(row)
    stage(session, subjects.for_token(subjects.LEDGER_POSITIONS, position.bot_id), position)
    stage_kv(
        session,
        subjects.POSITIONS_BUCKET,
        position.bot_id,
        position,
        message_id=f"kv-{position.message_id}",
    )


def position_of(session: Session, bot_id: str, mode: str) -> PositionUpdate | None:
    row = session.get(PositionRow, (bot_id, mode))
    return PositionUpdate.model_validate_json(row.payload) if row is not None else None


def positions(session: Session, mode: str | None = None) -> list[PositionUpdate]:
    query = select(PositionRow).order_by(col(PositionRow.bot_id))
    if mode:
        query = query.where(PositionRow.mode == mode)
    return [PositionUpdate.model_validate_json(row.payload) for row in session.exec(query)]
