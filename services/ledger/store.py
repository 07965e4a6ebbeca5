"""The ledger's facts (fills) and what is derived from them (the latest position per bot)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy import (
    ColumnElement,
    Insert,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    false,
    insert,
    or_,
    update,
)
from sqlmodel import Field, Session, SQLModel, col, select

from services.ledger.accounting import LedgerFill
from shared import subjects
from shared.contracts import FINAL_ORDER_STATUSES, Fill, OrderEvent, PositionUpdate
from shared.db import ExactDecimal, UtcDateTime, by_dialect, for_session
from shared.money import format_decimal
from shared.outbox import stage_with_put


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


# The hot path (every order event) runs Core statements, built once here so that SQLAlchemy
# compiles each once and caches it: through the ORM, its identity map and unit of work were
# most of the ledger's cost per event, and bought nothing for rows written once and read back.
_FILLS = FillRow.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
_ORDERS = LedgerOrderRow.__table__  # type: ignore[attr-defined]  # SQLModel sets __table__ on table models
_POSITIONS = PositionRow.__table__  # type: ignore[attr-defined]  # SQLModel sets __table__ on table models

_LOCK = (
    select(_POSITIONS.c.payload)
    .where(_POSITIONS.c.bot_id == bindparam("bot_id"), _POSITIONS.c.mode == bindparam("mode"))
    .with_for_update()
)


def lock_position(session: Session, bot_id: str, mode: str) -> str | None:
    """Book one bot at a time across ledger instances: the bot's position row is locked (PostgreSQL
    ``FOR UPDATE``) until the transaction ends, so a second instance booking another fill of the
    same bot waits and then recomputes from both fills, instead of overwriting the position with
    one that misses the first. A bot's first fill has no row to lock: two first bookings at once
    collide on the row's key and one is retried. SQLite serializes writers by itself.

    Returns the stored position (its JSON; ``None``: none yet), read under the lock."""
    return session.execute(_LOCK, {"bot_id": bot_id, "mode": mode}).scalar()


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


def row_facts(row: Row) -> dict[str, object]:
    return {name: getattr(row, name) for name in FACTS}


@dataclass(frozen=True)
class Moved:
    """A booked fill that an event places earlier than it was (a late redelivery of an earlier
    event): its row, and its new place (the event's sequence, its index there)."""

    row_id: int
    sequence: int
    index: int


@dataclass(frozen=True)
class Sorted:
    """An event's fills sorted against the books: new ones (with their place in the event), and
    booked ones this event places earlier (a late redelivery of an earlier event)."""

    new: list[tuple[int, Fill]]
    moved: list[Moved]


def _booked_as(where: ColumnElement[bool]) -> Select:
    return select(_FILLS).where(where).order_by(_FILLS.c.id)


_BOOKED_AS = _booked_as(
    or_(
        _FILLS.c.fill_key.in_(bindparam("keys", expanding=True)),
        and_(
            _FILLS.c.trade_id.in_(bindparam("trade_ids", expanding=True)),
            _FILLS.c.trade_type == "FILL",
        ),
    )
)
"""The booked fills an event's fills may be: by key, or (fills only) by trade id."""
_BOOKED_AS_ONE = _booked_as(
    or_(
        _FILLS.c.fill_key == bindparam("key"),
        and_(_FILLS.c.trade_id == bindparam("trade_id"), _FILLS.c.trade_type == "FILL"),
    )
)
"""The same for an event of one fill (most are): lists in a statement cost a rendering of it
at every execution."""


def _booked(session: Session, fills: list[Fill]) -> Sequence[Row]:
    if len(fills) == 1:
        (fill,) = fills
        one = {"key": fill.entry_id or fill.trade_id, "trade_id": fill.trade_id}
        return session.execute(_BOOKED_AS_ONE, one).all()
    return session.execute(
        _BOOKED_AS,
        {
            "keys": [fill.entry_id or fill.trade_id for fill in fills],
            "trade_ids": [fill.trade_id for fill in fills],
        },
    ).all()


_MOVE = (
    update(_FILLS)
    .where(_FILLS.c.id == bindparam("row_id"))
    .values(sequence=bindparam("new_sequence"), fill_index=bindparam("new_index"))
)


def sort_fills(session: Session, event: OrderEvent) -> Sorted | Conflict:
    """Deduplicate the event's fills (inside the event and against the books) by their key, and
    store the earlier places of the booked ones it moves. A key repeated with other facts is a
    :class:`Conflict`: nothing of the event is booked. One query for all of the event's fills."""
    if not event.fills:
        return Sorted([], [])
    booked = _booked(session, event.fills)
    by_key = {row.fill_key: row for row in booked}
    placed: dict[int, int | None] = {}  # row id -> its sequence as this event leaves it
    new: dict[str, tuple[int, Fill]] = {}
    moved: list[Moved] = []
    for index, fill in enumerate(event.fills):
        key = fill.entry_id or fill.trade_id
        facts = fill_facts(event, fill)
        if key in new:
            earlier = fill_facts(event, new[key][1])
            if earlier != facts:
                return Conflict(key, earlier, facts)
            continue  # the same fill twice in one event: booked once
        row = by_key.get(key)
        if row is None:
            row = _same_fill_other_key(booked, fill)
            if row is None:
                new[key] = (index, fill)
                continue
            facts = facts | {"entry_id": row.entry_id}  # one side did not know the entry id
        if row_facts(row) != facts:
            return Conflict(key, row_facts(row), facts)
        sequence = placed.get(row.id, row.sequence)
        if event.sequence is not None and (sequence is None or sequence > event.sequence):
            placed[row.id] = event.sequence
            moved.append(Moved(row.id, event.sequence, index))
    if moved:
        session.execute(
            _MOVE,
            [{"row_id": m.row_id, "new_sequence": m.sequence, "new_index": m.index} for m in moved],
        )
    return Sorted(list(new.values()), moved)


def _same_fill_other_key(booked: Sequence[Row], fill: Fill) -> Row | None:
    """A fill booked under its trade id when this one brings an entry id, or the other way
    round (a message from before the executor carried entry ids): the same trade, one record."""
    if fill.trade_type != "FILL":
        return None
    for row in booked:
        if (
            row.trade_id == fill.trade_id
            and row.trade_type == "FILL"
            and (fill.entry_id is None or row.entry_id is None)
        ):
            return row
    return None


_ADD_FILL = insert(_FILLS)


def add_fills(session: Session, event: OrderEvent, fills: list[tuple[int, Fill]]) -> None:
    """Book the fills, in the order given (their row ids keep it: the arrival order)."""
    if not fills:
        return
    session.execute(
        _ADD_FILL,
        [
            {
                "fill_key": fill.entry_id or fill.trade_id,
                "trade_id": fill.trade_id,
                "entry_id": fill.entry_id,
                "trade_type": fill.trade_type,
                "bot_id": event.bot_id,
                "mode": event.mode,
                "product_id": event.product_id,
                "intent_id": event.intent_id,
                "client_order_id": event.client_order_id,
                "side": event.side,
                "price": fill.price,
                "size": fill.size,
                "fee": fill.fee,
                "liquidity": fill.liquidity,
                "time": fill.time,
                "order_event_id": event.message_id,
                "sequence": event.sequence,
                "fill_index": index,
                "intent_reason": event.intent_reason,
            }
            for index, fill in fills
        ],
    )


def _note(insert_: Callable[[Table], Insert]) -> Insert:
    statement = insert_(_ORDERS)
    return statement.on_conflict_do_update(  # type: ignore[attr-defined]  # both dialects' Insert have it
        index_elements=["client_order_id"],
        set_={"status": statement.excluded.status, "final": statement.excluded.final},  # type: ignore[attr-defined]  # both dialects' inserts have excluded
        where=_ORDERS.c.final == false(),
    ).returning(_ORDERS.c.final)


_NOTE = by_dialect(_note)
"""Insert the order's status, or update it unless it is final: the row it leaves, or none."""


def note_order(session: Session, event: OrderEvent) -> bool:
    """Remember the order's status; True when this event made it final (final stays final)."""
    final = session.execute(
        for_session(_NOTE, session),
        {
            "client_order_id": event.client_order_id,
            "bot_id": event.bot_id,
            "mode": event.mode,
            "side": event.side,
            "status": event.status,
            "final": event.status in FINAL_ORDER_STATUSES,
        },
    ).scalar()
    return bool(final)


_HAS_FILLS = select(_FILLS.c.id).where(_FILLS.c.client_order_id == bindparam("order")).limit(1)


def has_fills(session: Session, client_order_id: str) -> bool:
    return session.execute(_HAS_FILLS, {"order": client_order_id}).first() is not None


_FILLS_OF = (
    select(_FILLS)
    .where(_FILLS.c.bot_id == bindparam("bot_id"), _FILLS.c.mode == bindparam("mode"))
    .order_by(_FILLS.c.id)
)


def fills_of(session: Session, bot_id: str, mode: str) -> Sequence[Row]:
    """The bot's fills in arrival order, as rows of the fills table (a :class:`FillRow`'s
    attributes, no ORM object)."""
    return session.execute(_FILLS_OF, {"bot_id": bot_id, "mode": mode}).all()


def bots_with_fills(session: Session, mode: str) -> list[str]:
    return list(
        session.exec(
            select(FillRow.bot_id).where(FillRow.mode == mode).distinct().order_by(FillRow.bot_id)
        )
    )


# A stored fill as the accounting core books it: one column per field of ``LedgerFill``, in its
# order, so a row makes one positionally (reading a row's values by name cost more than the
# query); then whether its order is final, as the ledger last heard (``None``: never heard).
_COLUMN_OF_FIELD = {"index": _FILLS.c.fill_index, "reason": _FILLS.c.intent_reason}
_LEDGER_FILL = [_COLUMN_OF_FIELD.get(f.name, _FILLS.c.get(f.name)) for f in fields(LedgerFill)]
_BOOKED_FILLS = (
    sa.select(*_LEDGER_FILL, _ORDERS.c.final)
    .select_from(
        _FILLS.outerjoin(
            _ORDERS,
            and_(
                _ORDERS.c.client_order_id == _FILLS.c.client_order_id,
                _ORDERS.c.bot_id == _FILLS.c.bot_id,
                _ORDERS.c.mode == _FILLS.c.mode,
            ),
        )
    )
    .where(_FILLS.c.bot_id == bindparam("bot_id"), _FILLS.c.mode == bindparam("mode"))
    .order_by(_FILLS.c.id)
)


def booked_fills(session: Session, bot_id: str, mode: str) -> tuple[list[LedgerFill], set[str]]:
    """The bot's fills as the accounting core books them, in arrival order (the core sorts
    them into booking order), and the orders of those the exchange has finished; orders the
    ledger never heard a status of (fills booked before it kept statuses) count as finished."""
    rows = session.execute(_BOOKED_FILLS, {"bot_id": bot_id, "mode": mode}).all()
    # Columns written only from validated contracts: the literals of ``side`` and ``trade_type``
    # hold, and ``ExactDecimal`` reads money back as ``Decimal``.
    fills = [LedgerFill(*row[:-1]) for row in rows]
    finished = {row.client_order_id for row in rows if row.final is not False}
    return fills, finished


_UPDATE_POSITION = (
    update(_POSITIONS)
    .where(_POSITIONS.c.bot_id == bindparam("key_bot"), _POSITIONS.c.mode == bindparam("key_mode"))
    .values(sequence=bindparam("sequence"), payload=bindparam("payload"))
)
_INSERT_POSITION = insert(_POSITIONS)


def save_position(session: Session, position: PositionUpdate) -> None:
    """Store the position and stage it for the positions subject and bucket, in one transaction.

    An update of the stored row, else an insert: a plain one, so that two first bookings of
    one bot at once collide on the row's key (one is retried) rather than one overwriting the
    other's position (:func:`lock_position`)."""
    payload = position.model_dump_json()  # the row, the message and the bucket carry the same
    key = {"key_bot": position.bot_id, "key_mode": position.mode}
    updated = session.connection().execute(
        _UPDATE_POSITION, {**key, "sequence": position.sequence, "payload": payload}
    )
    if not updated.rowcount:
        session.execute(
            _INSERT_POSITION,
            {
                "bot_id": position.bot_id,
                "mode": position.mode,
                "sequence": position.sequence,
                "payload": payload,
            },
        )
    stage_with_put(
        session,
        subjects.for_token(subjects.LEDGER_POSITIONS, position.bot_id),
        position,
        subjects.POSITIONS_BUCKET,
        position.bot_id,
        payload=payload,
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
