"""The ledger's facts (fills) and what is derived from them (the latest position per bot)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlmodel import Field, Session, SQLModel, col, select

from services.ledger.accounting import LedgerFill
from shared import subjects
from shared.contracts import FINAL_ORDER_STATUSES, Fill, OrderEvent, PositionUpdate
from shared.db import ExactDecimal, UtcDateTime
from shared.money import format_decimal
from shared.outbox import stage, stage_kv


class FillRow(SQLModel, table=True):
    """One fill record as the exchange reported it, in the order it was first booked."""

    __tablename__ = "ledger_fills"

    id: int | None = Field(default=None, primary_key=True)
    """Arrival order: ties among fills of messages without a sequence are booked in it."""
    fill_key: str = Field(unique=True, max_length=128)
    """``entry_id`` when the exchange gave one, else ``trade_id``: the dedupe key."""
    trade_id: str = Field(index=True, max_length=128)
    entry_id: str | None = Field(default=None, max_length=128)
    trade_type: str = Field(default="FILL", max_length=16)
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
    sequence: int | None = None
    """The executor's sequence of the order event that first brought it (``None``: older)."""
    fill_index: int = 0
    """Its place among that event's fills."""
    intent_reason: str | None = Field(default=None, max_length=64)
    """Why its order was asked: the event's ``intent_reason`` (``None``: an older event)."""


class LedgerOrderRow(SQLModel, table=True):
    """The last status the ledger heard for each order: an exit closes a position only once its
    order is final (its last fill booked)."""

    __tablename__ = "ledger_orders"

    client_order_id: str = Field(primary_key=True, max_length=128)
    bot_id: str = Field(index=True, max_length=64)
    mode: str = Field(max_length=16)
    side: str = Field(max_length=4)
    status: str = Field(max_length=24)
    final: bool = False


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


# What makes a fill the same fill: the facts a trader reads. Not the event that carried it nor
# the liquidity flag (an exchange may fill that in later).
FACTS = ("trade_id", "entry_id", "trade_type", "bot_id", "mode", "client_order_id", "side",
         "price", "size", "fee", "time")  # fmt: skip


@dataclass(frozen=True)
class Conflict:
    """A fill whose key is booked (or repeated in the event) with other facts."""

    key: str
    booked: dict[str, object]
    incoming: dict[str, object]

    def sentence(self) -> str:
        """Both versions of every fact that differs, short enough for a dead letter's reason."""
        differ = [name for name in FACTS if self.booked[name] != self.incoming[name]]
        booked = ", ".join(f"{name} {_plain(self.booked[name])}" for name in differ)
        incoming = ", ".join(f"{name} {_plain(self.incoming[name])}" for name in differ)
        return (
            f"fill {self.key} (trade {self.booked['trade_id']}, bot {self.booked['bot_id']}, "
            f"order {self.booked['client_order_id']}) is booked with {booked}; "
            f"this event says {incoming}. Refused: the books keep the booked fill."
        )


def _plain(value: object) -> str:
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def fill_facts(event: OrderEvent, fill: Fill) -> dict[str, object]:
    return {
        "trade_id": fill.trade_id,
        "entry_id": fill.entry_id,
        "trade_type": fill.trade_type,
        "bot_id": event.bot_id,
        "mode": event.mode,
        "client_order_id": event.client_order_id,
        "side": event.side,
        "price": fill.price,
        "size": fill.size,
        "fee": fill.fee,
        "time": fill.time,
    }


def row_facts(row: FillRow) -> dict[str, object]:
    return {name: getattr(row, name) for name in FACTS}


@dataclass(frozen=True)
class Sorted:
    """An event's fills sorted against the books: new ones (with their place in the event), and
    booked ones this event places earlier (a late redelivery of an earlier event)."""

    new: list[tuple[int, Fill]]
    moved: list[FillRow]


def sort_fills(session: Session, event: OrderEvent) -> Sorted | Conflict:
    """Deduplicate the event's fills (inside the event and against the books) by their key.
    A key repeated with other facts is a :class:`Conflict`: nothing of the event is booked."""
    new: dict[str, tuple[int, Fill]] = {}
    moved: list[FillRow] = []
    for index, fill in enumerate(event.fills):
        key = fill.entry_id or fill.trade_id
        facts = fill_facts(event, fill)
        if key in new:
            earlier = fill_facts(event, new[key][1])
            if earlier != facts:
                return Conflict(key, earlier, facts)
            continue  # the same fill twice in one event: booked once
        row = session.exec(select(FillRow).where(FillRow.fill_key == key)).first()
        if row is None:
            row = _same_fill_other_key(session, fill)
            if row is None:
                new[key] = (index, fill)
                continue
            facts = facts | {"entry_id": row.entry_id}  # one side did not know the entry id
        if row_facts(row) != facts:
            return Conflict(key, row_facts(row), facts)
        if event.sequence is not None and (row.sequence is None or row.sequence > event.sequence):
            row.sequence, row.fill_index = event.sequence, index
            moved.append(row)
    return Sorted(list(new.values()), moved)


def _same_fill_other_key(session: Session, fill: Fill) -> FillRow | None:
    """A fill booked under its trade id when this one brings an entry id, or the other way
    round (a message from before the executor carried entry ids): the same trade, one record."""
    if fill.trade_type != "FILL":
        return None
    query = select(FillRow).where(FillRow.trade_id == fill.trade_id, FillRow.trade_type == "FILL")
    if fill.entry_id is not None:
        query = query.where(col(FillRow.entry_id).is_(None))
    return session.exec(query).first()


def add_fills(session: Session, event: OrderEvent, fills: list[tuple[int, Fill]]) -> None:
    for index, fill in fills:
        session.add(
            FillRow(
                fill_key=fill.entry_id or fill.trade_id,
                trade_id=fill.trade_id,
                entry_id=fill.entry_id,
                trade_type=fill.trade_type,
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
                sequence=event.sequence,
                fill_index=index,
                intent_reason=event.intent_reason,
            )
        )
    session.flush()


def note_order(session: Session, event: OrderEvent) -> bool:
    """Remember the order's status; True when this event made it final (final stays final)."""
    row = session.get(LedgerOrderRow, event.client_order_id)
    if row is None:
        row = LedgerOrderRow(
            client_order_id=event.client_order_id, bot_id=event.bot_id, mode=event.mode,
            side=event.side, status=event.status,
        )  # fmt: skip
    elif row.final:
        return False
    row.status = event.status
    row.final = event.status in FINAL_ORDER_STATUSES
    session.add(row)
    return row.final


def has_fills(session: Session, client_order_id: str) -> bool:
    query = select(FillRow.id).where(FillRow.client_order_id == client_order_id)
    return session.exec(query).first() is not None


def final_orders(session: Session, bot_id: str, mode: str) -> set[str]:
    """Orders of the bot the exchange has finished; orders the ledger never heard a status of
    (fills booked before it kept statuses) count as finished."""
    rows = session.exec(
        select(LedgerOrderRow).where(LedgerOrderRow.bot_id == bot_id, LedgerOrderRow.mode == mode)
    )
    unfinished = {row.client_order_id for row in rows if not row.final}
    ordered = session.exec(
        select(FillRow.client_order_id)
        .where(FillRow.bot_id == bot_id, FillRow.mode == mode)
        .distinct()
    )
    return set(ordered) - unfinished


def fills_of(session: Session, bot_id: str, mode: str) -> list[FillRow]:
    """The bot's fills in arrival order (the core sorts them into booking order)."""
    return list(
        session.exec(
            select(FillRow)
            .where(FillRow.bot_id == bot_id, FillRow.mode == mode)
            .order_by(col(FillRow.id))
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
        entry_id=row.entry_id,
        # a str column, written only from a validated Fill contract
        trade_type=row.trade_type,  # type: ignore[arg-type]
        sequence=row.sequence,
        index=row.fill_index,
        client_order_id=row.client_order_id,
        # a str column, written only from a validated OrderEvent contract
        side=row.side,  # type: ignore[arg-type]
        price=Decimal(row.price),
        size=Decimal(row.size),
        fee=Decimal(row.fee),
        time=row.time,
        reason=row.intent_reason,
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


TABLES: list[type[SQLModel]] = [FillRow, LedgerOrderRow, PositionRow]
"""The ledger's tables (the service and the backtest create these)."""
