"""Protective stops resting on the exchange, as the executor keeps them (shared/stops.py decides
which stop a position should have; this module keeps the two invariants at the last step before
the exchange, whatever was approved):

* never two live stops for one bot: a new stop (the position changed) replaces the live one, and
  is placed only once the exchange has confirmed the cancel of the one it replaces;
* never a stop larger than the holding: a stop is refused while another sell of the bot is not
  final, and any other sell waits until every live stop of the bot is cancelled. A sell (a stop
  too) that waited while a stop filled is refused: it was sized from a holding that is no longer
  there, and the next position asks again.

A stop-limit order is recorded as ``order_type = "stop"`` (the store's column holds 8 characters)
with its stop price in ``executor_order_stops_v1`` beside it, like the pricing: create_all adds a
missing table but never a column.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import Row, bindparam, union_all
from sqlalchemy import select as sa_select
from sqlmodel import Field, Session, SQLModel, col, select

from services.executor.store import FillEntryRow, FillRow, OrderRow
from shared.contracts import FINAL_ORDER_STATUSES, Reason
from shared.db import ExactDecimal
from shared.stops import HeldStop, live_status

STOP: Final = "stop"
"""The store's ``order_type`` of a stop-limit order (the exchange's ``stop_limit``)."""
STOP_LIMIT: Final = "stop_limit"
CANCEL_FOR_SELL: Final = "STOP_BEFORE_SELL"
CANCEL_FOR_HALT: Final = "HALT_CANCEL_STOPS"
"""The code of a halt that cancels the protective stops too (``tranche halt --cancel-stops``);
any other halt keeps them: they only ever reduce risk."""


class OrderStopRow(SQLModel, table=True):
    """The stop price of a stop-limit order, one row per such order."""

    __tablename__ = "executor_order_stops_v1"

    client_order_id: str = Field(primary_key=True, max_length=128)
    stop_price: Decimal = Field(sa_type=ExactDecimal)


def store_order_type(intent_order_type: str) -> str:
    return STOP if intent_order_type == STOP_LIMIT else intent_order_type


def exchange_order_type(store_order_type: str) -> str:
    return STOP_LIMIT if store_order_type == STOP else store_order_type


def stop_price_of(session: Session, client_order_id: str) -> Decimal | None:
    row = session.get(OrderStopRow, client_order_id)
    return row.stop_price if row is not None else None


@dataclass(frozen=True)
class SellGate:
    """What an order must wait for or be refused for before it goes to the exchange."""

    cancel_first: tuple[str, ...] = ()
    """Live stops of the bot to cancel before this sell (then it waits for them to be final)."""
    wait: bool = False
    refusal: Reason | None = None


GO = SellGate()


# Core, compiled once: every sell is checked before it goes out.
_ORDERS = OrderRow.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
_FILLS = FillRow.__table__  # type: ignore[attr-defined]  # SQLModel sets __table__ on table models
_OF_THE_BOT = (_ORDERS.c.bot_id == bindparam("bot"), _ORDERS.c.mode == bindparam("mode"))
_LIVE_SELLS = sa_select(
    _ORDERS.c.client_order_id, _ORDERS.c.order_type, _ORDERS.c.cancel_code
).where(
    *_OF_THE_BOT,
    _ORDERS.c.side == "sell",
    _ORDERS.c.client_order_id != bindparam("cid"),
    _ORDERS.c.status.not_in(list(FINAL_ORDER_STATUSES)),
)
_ENTRIES = FillEntryRow.__table__  # type: ignore[attr-defined]  # SQLModel sets __table__ on table models
_STOP_FILLED_SINCE = union_all(
    *(
        sa_select(_ORDERS.c.client_order_id)
        .join(fills, fills.c.client_order_id == _ORDERS.c.client_order_id)
        .where(*_OF_THE_BOT, _ORDERS.c.order_type == STOP, fills.c.time >= bindparam("since"))
        # Both tables a fill may be in: Coinbase's and the mock's fills carry an entry id and
        # are kept in executor_fill_entries_v1; only fills without one in executor_fills_v1.
        for fills in (_FILLS, _ENTRIES)
    )
)


def _live_sells(session: Session, order: OrderRow) -> list[Row[Any]]:
    """The bot's other sells not final: their ``client_order_id``, ``order_type``,
    ``cancel_code``."""
    values = {"bot": order.bot_id, "mode": order.mode, "cid": order.client_order_id}
    return list(session.connection().execute(_LIVE_SELLS, values))


def sell_gate(session: Session, order: OrderRow) -> SellGate:
    """Whether a ``new`` order may go to the exchange now (in the caller's transaction)."""
    if order.side != "sell":
        return GO
    others = _live_sells(session, order)
    stops = [o for o in others if o.order_type == STOP]
    if order.order_type == STOP:
        sells = [o for o in others if o.order_type != STOP]
        if sells:
            kinds = ", ".join(f"{o.client_order_id} ({o.order_type})" for o in sells)
            return SellGate(
                refusal=Reason(
                    code="SELL_ALREADY_LIVE",
                    message=(
                        f"bot {order.bot_id} has a sell not yet final ({kinds}): a stop beside it "
                        "could sell more than the holding; the next position asks again"
                    )[:500],
                )
            )
    # A stop fill after this sell was decided: the sell was sized from a holding now smaller.
    filled_stop = (
        session.connection()
        .execute(
            _STOP_FILLED_SINCE,
            {"bot": order.bot_id, "mode": order.mode, "since": order.decided_at},
        )
        .scalar()
    )
    if filled_stop is not None:
        return SellGate(
            refusal=Reason(
                code="STOP_FILLED_FIRST",
                message=(
                    f"the protective stop {filled_stop} filled after this sell was decided: it "
                    "was sized from a holding that is no longer there; the next position asks again"
                ),
            )
        )
    if not stops:
        return GO
    return SellGate(
        cancel_first=tuple(o.client_order_id for o in stops if o.cancel_code is None), wait=True
    )


def poll_cap_s(order: OrderRow, cap_s: float, resting_stop_cap_s: float) -> float:
    """The longest wait between two polls of ``order``: ``resting_stop_cap_s`` for a stop that
    rests untriggered (``open``, no cancel asked: it is long-lived by design), ``cap_s`` for
    every other order (a triggered stop fills, a cancel needs its confirmation)."""
    resting = order.order_type == STOP and order.status == "open" and order.cancel_code is None
    return max(cap_s, resting_stop_cap_s) if resting else cap_s


def halt_cancels(code: str, order_type: str) -> bool:
    """Whether a halt with this code cancels an order of this type: a stop only when asked."""
    return order_type != STOP or code == CANCEL_FOR_HALT


def held_stops(session: Session) -> list[HeldStop]:
    """Every stop order not yet final, oldest first: what the exchange holds (or is asked to
    place or cancel) for each bot, with what of it remains unfilled (``GET /stops``)."""
    rows = session.exec(
        select(OrderRow, OrderStopRow)
        .join(OrderStopRow, col(OrderStopRow.client_order_id) == col(OrderRow.client_order_id))
        .where(
            OrderRow.order_type == STOP,
            col(OrderRow.status).not_in(list(FINAL_ORDER_STATUSES)),
        )
        .order_by(col(OrderRow.created_at))
    )
    return [
        HeldStop(
            bot_id=order.bot_id,
            client_order_id=order.client_order_id,
            intent_id=order.intent_id,
            status=live_status(order.status, order.cancel_code is not None),
            order_status=order.status,
            size=(order.base_size or Decimal(0)) - order.filled_size,
            stop_price=stop.stop_price,
            limit_price=order.limit_price or Decimal(0),
        )
        for order, stop in rows
    ]
