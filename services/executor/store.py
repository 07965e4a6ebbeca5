"""The executor's record of every order and fill: written before an order reaches the exchange
and after every answer, each change with the events it means staged in the same transaction."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, bindparam, update
from sqlalchemy import select as sa_select
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Field, Session, SQLModel, col, select

from services.executor.orders import Advance, OrderIdentity, OrderState, fill_key
from shared import subjects
from shared.contracts import FINAL_ORDER_STATUSES, Fill, OrderEvent
from shared.db import ExactDecimal, InsertUnlessThere, UtcDateTime, insert_row
from shared.money import utc_now
from shared.outbox import OutboxMessage, stage


class OrderRow(SQLModel, table=True):
    # v2: limit orders, cancels and adoption added columns (tables carry a version like consumers:
    # create_all never alters an existing table).
    __tablename__ = "executor_orders_v2"

    client_order_id: str = Field(primary_key=True, max_length=128)
    exchange_client_order_id: str = Field(index=True, max_length=200)
    """What the exchange knows the order by: the executor's prefix + ``client_order_id``."""
    intent_id: str = Field(index=True, max_length=128)
    bot_id: str = Field(index=True, max_length=64)
    product_id: str = Field(max_length=64)
    mode: str = Field(max_length=16)
    action: str = Field(max_length=8)
    side: str = Field(max_length=4)
    order_type: str = Field(default="market", max_length=8)
    quote_size: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    base_size: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    limit_price: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    ttl_s: int | None = None
    """A limit order's time-to-live from when the exchange accepted it."""
    decided_at: datetime = Field(sa_type=UtcDateTime)
    status: str = Field(max_length=24, index=True)
    """``new`` (recorded, not yet confirmed by the exchange) or an order event status."""
    exchange_order_id: str | None = Field(default=None, max_length=64)
    filled_size: Decimal = Field(default=Decimal(0), sa_type=ExactDecimal)
    placed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    cancel_code: str | None = Field(default=None, max_length=64)
    """Why the executor asked the exchange to cancel (``LIMIT_TTL``, ``HALT``), once asked."""
    cancel_message: str | None = Field(default=None, max_length=500)
    adopted: bool = False
    """Found open on the exchange with our prefix but not in this store (reconciliation)."""
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)


class OrderPricingRow(SQLModel, table=True):
    """The price and market time the intent behind an order was made at, one row per order that
    had them. A table of its own beside ``executor_orders_v2``, written in the same transaction:
    create_all adds a missing table but never a column, so an executor upgraded in place keeps
    every order it has (older ones simply have no pricing, and are priced as before)."""

    __tablename__ = "executor_order_pricing_v1"

    client_order_id: str = Field(primary_key=True, max_length=128)
    reference_price: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    market_time: datetime | None = Field(default=None, sa_type=UtcDateTime)


class OrderIntentReasonRow(SQLModel, table=True):
    """Why the order was asked: the reason code of its intent (``SIGNAL``, ``STOP_ON_EXCHANGE``,
    ``FLATTEN``...), put on every event of the order (``OrderEvent.intent_reason``) so the ledger
    books each fill as the entry or exit it is. A table of its own, like the pricing, so an
    executor upgraded in place keeps its orders (older ones simply have no reason)."""

    __tablename__ = "executor_order_intent_reasons_v1"

    client_order_id: str = Field(primary_key=True, max_length=128)
    code: str = Field(max_length=64)


class FillRow(SQLModel, table=True):
    __tablename__ = "executor_fills_v1"

    trade_id: str = Field(primary_key=True, max_length=128)
    client_order_id: str = Field(index=True, max_length=128)
    price: Decimal = Field(sa_type=ExactDecimal)
    size: Decimal = Field(sa_type=ExactDecimal)
    """Base currency."""
    fee: Decimal = Field(sa_type=ExactDecimal)
    liquidity: str = Field(max_length=8)
    time: datetime = Field(sa_type=UtcDateTime)


class OrderReasonRow(SQLModel, table=True):
    """Why an order ended failed, cancelled or expired: the code and sentence of its final
    event, kept on the record (``GET /orders``) and not only in the event and the log. A table of
    its own, like the pricing, so an executor upgraded in place keeps its orders."""

    __tablename__ = "executor_order_reasons_v1"

    client_order_id: str = Field(primary_key=True, max_length=128)
    code: str = Field(max_length=64)
    message: str = Field(max_length=500)


class ProductRulesRow(SQLModel, table=True):
    """A product's trading rules as the exchange last published them (production): what the
    executor sizes by, kept so a restart while the exchange is unreachable still has them."""

    __tablename__ = "executor_product_rules_v1"

    product_id: str = Field(primary_key=True, max_length=64)
    listed: bool = True
    """False: the exchange answered that it does not list the product."""
    base_increment: Decimal = Field(sa_type=ExactDecimal)
    quote_increment: Decimal = Field(sa_type=ExactDecimal)
    base_min_size: Decimal = Field(sa_type=ExactDecimal)
    quote_min_size: Decimal = Field(sa_type=ExactDecimal)
    base_max_size: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    quote_max_size: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    status: str = Field(default="online", max_length=32)
    is_disabled: bool = False
    trading_disabled: bool = False
    cancel_only: bool = False
    limit_only: bool = False
    post_only: bool = False
    fetched_at: datetime = Field(sa_type=UtcDateTime)


class FillEntryRow(SQLModel, table=True):
    """A fill that carries Coinbase's ``entry_id`` (its unique id; ``trade_id`` repeats for a
    reversal or correction) and ``trade_type``. A table of its own beside ``executor_fills_v1``
    (keyed by ``trade_id``, which stays for the mock's fills), so an upgraded executor keeps
    every fill it has."""

    __tablename__ = "executor_fill_entries_v1"

    entry_id: str = Field(primary_key=True, max_length=128)
    trade_id: str = Field(max_length=128)
    trade_type: str = Field(default="FILL", max_length=16)
    client_order_id: str = Field(index=True, max_length=128)
    price: Decimal = Field(sa_type=ExactDecimal)
    size: Decimal = Field(sa_type=ExactDecimal)
    """Base currency, positive; a ``REVERSAL`` takes it back."""
    fee: Decimal = Field(sa_type=ExactDecimal)
    liquidity: str = Field(max_length=8)
    time: datetime = Field(sa_type=UtcDateTime)


class BotSequenceRow(SQLModel, table=True):
    """The last ``OrderEvent.sequence`` drawn for each bot, shared by every executor instance."""

    __tablename__ = "executor_bot_sequences_v1"

    bot_id: str = Field(primary_key=True, max_length=64)
    last: int = 0


TABLES: list[type[SQLModel]] = [
    BotSequenceRow,
    FillEntryRow,
    OrderRow,
    FillRow,
    OrderPricingRow,
    OrderReasonRow,
    OrderIntentReasonRow,
    ProductRulesRow,
]


def is_final(order: OrderRow) -> bool:
    return order.status in FINAL_ORDER_STATUSES


def identity(order: OrderRow) -> OrderIdentity:
    return OrderIdentity(
        bot_id=order.bot_id,
        product_id=order.product_id,
        # a str column, written only from a validated contract's Mode
        mode=order.mode,  # type: ignore[arg-type]
        intent_id=order.intent_id,
        client_order_id=order.client_order_id,
        action=order.action,
        side=order.side,
    )


def identity_fields(order: OrderRow) -> dict[str, object]:
    """What every order event of this order repeats (as ``OrderEvent`` fields)."""
    return {
        "bot_id": order.bot_id,
        "product_id": order.product_id,
        "mode": order.mode,
        "intent_id": order.intent_id,
        "client_order_id": order.client_order_id,
        "exchange_order_id": order.exchange_order_id,
        "action": order.action,
        "side": order.side,
    }


_ORDERS = OrderRow.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
_STATUS_OF = sa_select(_ORDERS.c.status).where(_ORDERS.c.client_order_id == bindparam("cid"))
_ORDER = select(OrderRow).where(col(OrderRow.client_order_id) == bindparam("cid"))
_MOVED = ("placed_at", "exchange_order_id", "status", "filled_size", "last_error", "updated_at")
"""The columns of an order that :func:`apply` changes."""


def order_of(session: Session, client_order_id: str) -> OrderRow | None:
    """``session.get(OrderRow, ...)`` with a statement built once (``get`` builds its query on
    every call): the order is read at the start of every sync and in every change to it."""
    return session.exec(_ORDER, params={"cid": client_order_id}).first()


def status_of(session: Session, client_order_id: str) -> str | None:
    """The order's stored status (``None``: no such order), without loading the order."""
    return session.connection().execute(_STATUS_OF, {"cid": client_order_id}).scalar()


def pricing_of(session: Session, client_order_id: str) -> OrderPricingRow | None:
    return session.get(OrderPricingRow, client_order_id)


def intent_reason_of(session: Session, client_order_id: str) -> str | None:
    row = session.get(OrderIntentReasonRow, client_order_id)
    return row.code if row is not None else None


# Core statements, compiled once: an order's fills are read in every transaction that moves it.
_FILLS = FillRow.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
_FILL_ENTRIES = FillEntryRow.__table__  # type: ignore[attr-defined]  # SQLModel sets __table__ on table models
_FILLS_OF = sa_select(_FILLS).where(_FILLS.c.client_order_id == bindparam("cid"))
_FILL_ENTRIES_OF = sa_select(_FILL_ENTRIES).where(
    _FILL_ENTRIES.c.client_order_id == bindparam("cid")
)


def fills_of(session: Session, client_order_id: str) -> tuple[Fill, ...]:
    connection, cid = session.connection(), {"cid": client_order_id}
    fills = [
        *map(_fill, connection.execute(_FILLS_OF, cid)),
        *map(_fill, connection.execute(_FILL_ENTRIES_OF, cid)),
    ]
    return tuple(sorted(fills, key=lambda fill: (fill.time, fill_key(fill))))


def _fill(row: Row[Any]) -> Fill:
    """A stored fill, from either table (``executor_fills_v1`` has no entry id: a mock's or an
    older fill, a ``FILL`` by its ``trade_id``)."""
    stored = {name: value for name, value in row._mapping.items() if name != "client_order_id"}
    return Fill(**{"entry_id": None, "trade_type": "FILL", **stored})


def state_of(session: Session, order: OrderRow) -> OrderState:
    fills = fills_of(session, order.client_order_id)
    return OrderState(order.status, fills, order.exchange_order_id)


def apply(
    session: Session,
    order: OrderRow,
    step: Advance,
    exchange_order_id: str | None,
    state: OrderState,
    intent_reasons: dict[str, str | None] | None = None,
) -> None:
    """Store the new status and fills and stage the events, in the caller's transaction;
    ``order``: read in this transaction; ``state``: its state read in this transaction (its
    fills are those stored); ``intent_reasons``: as :func:`stage_order_events` takes them."""
    known = {fill_key(fill) for fill in state.known_fills}
    for fill in step.fills:
        if fill_key(fill) in known:
            continue
        values: dict[str, Any] = {
            "trade_id": fill.trade_id,
            "client_order_id": order.client_order_id,
            "price": fill.price,
            "size": fill.size,
            "fee": fill.fee,
            "liquidity": fill.liquidity,
            "time": fill.time,
        }
        if fill.entry_id is not None:
            entry: dict[str, Any] = {"entry_id": fill.entry_id, "trade_type": fill.trade_type}
            insert_row(session, FillEntryRow, **entry, **values)
        else:
            insert_row(session, FillRow, **values)
    placed_at = order.placed_at
    if exchange_order_id and placed_at is None:
        placed_at = utc_now()
    _store_order(
        session,
        order,
        placed_at=placed_at,
        exchange_order_id=exchange_order_id or order.exchange_order_id,
        status=step.status,
        filled_size=step.filled_size,
        last_error=None,
        updated_at=utc_now(),
    )
    for event in step.events:
        _keep_reason(session, event)
    stage_order_events(session, order.bot_id, step.events, intent_reasons)


_MOVE_ORDER = (
    update(_ORDERS)
    .where(_ORDERS.c.client_order_id == bindparam("cid"))
    .values({name: bindparam(f"new_{name}") for name in _MOVED})
)


def _store_order(session: Session, order: OrderRow, **values: object) -> None:
    """Write what an order's move changes (:data:`_MOVED`, all of it) with one Core statement
    compiled once, and set it on ``order`` as stored: the unit of work has nothing left to
    write for it at commit."""
    stored = {"cid": order.client_order_id} | {f"new_{name}": values[name] for name in _MOVED}
    session.connection().execute(_MOVE_ORDER, stored)
    for name in _MOVED:
        set_committed_value(order, name, values[name])


def _keep_reason(session: Session, event: OrderEvent) -> None:
    if event.reason is not None and event.status in FINAL_ORDER_STATUSES:
        session.merge(
            OrderReasonRow(
                client_order_id=event.client_order_id,
                code=event.reason.code,
                message=event.reason.message[:500],
            )
        )


def reasons_of(session: Session, client_order_ids: list[str]) -> dict[str, dict[str, str]]:
    """``{client_order_id: {"code", "message"}}`` for the orders among these that have one."""
    if not client_order_ids:
        return {}
    rows = session.exec(
        select(OrderReasonRow).where(col(OrderReasonRow.client_order_id).in_(client_order_ids))
    )
    return {row.client_order_id: {"code": row.code, "message": row.message} for row in rows}


def intent_reasons_of(session: Session, client_order_ids: list[str]) -> dict[str, str]:
    """``{client_order_id: code}``: why each of these orders was asked (its intent's reason
    code), for the orders that have one (``GET /orders``)."""
    if not client_order_ids:
        return {}
    rows = session.exec(
        select(OrderIntentReasonRow).where(
            col(OrderIntentReasonRow.client_order_id).in_(client_order_ids)
        )
    )
    return {row.client_order_id: row.code for row in rows}


def record_event(session: Session, order: OrderRow, event: OrderEvent) -> None:
    """Move the order to the event's status and stage the event, in one transaction."""
    order.status = event.status
    order.exchange_order_id = event.exchange_order_id or order.exchange_order_id
    order.filled_size = event.filled_size
    order.updated_at = utc_now()
    session.add(order)
    # Written before the bot's sequence is drawn, as apply writes it: every transaction locks
    # the order's row before the sequence's (PostgreSQL), never the other way round.
    session.flush()
    _keep_reason(session, event)
    stage_order_event(session, order.bot_id, event)


def stage_order_event(session: Session, bot_id: str, event: OrderEvent) -> None:
    """:func:`stage_order_events` for one event."""
    stage_order_events(session, bot_id, [event])


def stage_order_events(
    session: Session,
    bot_id: str,
    events: list[OrderEvent],
    intent_reasons: dict[str, str | None] | None = None,
) -> None:
    """Stage ``events`` in order, each stamped with the bot's next sequence (the order the
    ledger books fills in) and the reason code of its order's intent (``intent_reasons``: those
    the caller knows, by ``client_order_id``; the others are read). An event already staged
    (in this transaction or before) keeps its number and draws none.

    Nothing here flushes the session: what the caller changed goes to the database once, at its
    commit (a flush per query was most of the cost of staging)."""
    with session.no_autoflush:
        pending = _not_staged(session, events)
        if not pending:
            return
        first = next_sequences(session, bot_id, len(pending))
        reasons = dict(intent_reasons or {})
        subject = subjects.for_token(subjects.ORDERS_EVENTS, bot_id)
        for number, event in enumerate(pending, start=first):
            why = event.intent_reason
            if why is None:
                cid = event.client_order_id
                if cid not in reasons:
                    reasons[cid] = intent_reason_of(session, cid)
                why = reasons[cid]
            stamped = event.model_copy(update={"sequence": number, "intent_reason": why})
            stage(session, subject, stamped)  # a Core insert: it flushes nothing either


_OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
_STAGED_AMONG = sa_select(_OUTBOX.c.message_id).where(
    _OUTBOX.c.message_id.in_(bindparam("ids", expanding=True))
)


def _not_staged(session: Session, events: list[OrderEvent]) -> list[OrderEvent]:
    """The events whose message is not staged yet, in order, each message once: one query for
    all (what this transaction staged is in the database already: staging is a Core insert)."""
    ids = [event.message_id for event in events]
    staged = set(session.connection().execute(_STAGED_AMONG, {"ids": ids}).scalars())
    pending = []
    for event in events:
        if event.message_id not in staged:
            staged.add(event.message_id)
            pending.append(event)
    return pending


_SEQUENCES = BotSequenceRow.__table__  # type: ignore[attr-defined]  # SQLModel sets it
_FIRST_SEQUENCE = InsertUnlessThere(_SEQUENCES, ["bot_id"])
_DRAW_SEQUENCES = (
    update(_SEQUENCES)
    .where(_SEQUENCES.c.bot_id == bindparam("bot"))
    .values(last=_SEQUENCES.c.last + bindparam("count"))
    .returning(_SEQUENCES.c.last)
)


def next_sequences(session: Session, bot_id: str, count: int = 1) -> int:
    """The first of the bot's next ``count`` event numbers, durable and growing across
    restarts and instances: the counter row is updated in the caller's transaction, so a second
    instance drawing for the same bot waits for the first to commit (PostgreSQL row lock;
    SQLite has one writer)."""
    connection, values = session.connection(), {"bot": bot_id, "count": count}
    last = connection.execute(_DRAW_SEQUENCES, values).scalar()
    if last is None:  # the bot's first events: its counter row is made (once, whoever races)
        _FIRST_SEQUENCE(session, {"bot_id": bot_id, "last": 0})
        last = connection.execute(_DRAW_SEQUENCES, values).scalar_one()
    return int(last) - count + 1


def open_orders(session: Session) -> list[OrderRow]:
    """Every order that is not final, oldest first."""
    return list(
        session.exec(
            select(OrderRow)
            .where(col(OrderRow.status).not_in(list(FINAL_ORDER_STATUSES)))
            .order_by(col(OrderRow.created_at))
        )
    )


def recent_orders(session: Session, limit: int = 50) -> list[OrderRow]:
    return list(
        session.exec(select(OrderRow).order_by(col(OrderRow.created_at).desc()).limit(limit))
    )
