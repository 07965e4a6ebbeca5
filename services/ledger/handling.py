"""The ledger service's handling of one order event, in one transaction: the new fills booked,
the position recomputed (``booking.recompute``) and staged, a breach report staged. The service
(``app.py``) and the backtest (``tranche/backtest/engine.py``) both run it."""

from __future__ import annotations

from collections.abc import Mapping

from sqlmodel import Session

from services.ledger.accounting import Allocation
from services.ledger.booking import recompute
from services.ledger.positions import as_message
from services.ledger.store import (
    Conflict,
    add_fills,
    has_fills,
    lock_position,
    note_order,
    save_position,
    sort_fills,
)
from shared import subjects
from shared.bus import InvalidMessage
from shared.catalog import Product
from shared.contracts import OrderEvent, PositionUpdate, Reason, TrancheCapBreach
from shared.outbox import stage


def book_order_event(
    session: Session,
    body: OrderEvent,
    product: Product,
    allocation: Allocation,
    products: Mapping[str, Product],
) -> tuple[PositionUpdate, TrancheCapBreach | None, int] | Conflict | None:
    """The ledger's whole handling of one order event, in the caller's transaction: its new
    fills booked, the position recomputed and staged (message, then bucket put), a breach report
    staged. Returns (position, breach, fills booked now), a :class:`Conflict` (nothing booked),
    or ``None`` when nothing the books depend on changed (a redelivery, a status)."""
    stored = lock_position(session, body.bot_id, body.mode)  # first: later reads see every fill
    sorted_ = sort_fills(session, body)
    if isinstance(sorted_, Conflict):
        session.rollback()  # nothing of this event is booked
        return sorted_
    held = PositionUpdate.model_validate_json(stored) if stored else None
    if (
        sorted_.new
        and held is not None
        and held.status == "open"
        and (held.product_id != body.product_id)
    ):
        raise InvalidMessage(  # rolls the transaction back: nothing is booked
            Reason(
                code="PRODUCT_MISMATCH",
                message=f"a fill of {body.product_id} for bot {body.bot_id}, whose open "
                f"position holds {held.product_id}: one position never mixes products",
            )
        )
    # An exit order that finished may close the position (dust), if it filled at all.
    closing = note_order(session, body) and body.side == "sell"
    closing = closing and (bool(sorted_.new) or has_fills(session, body.client_order_id))
    if not sorted_.new and not sorted_.moved and not closing:
        return None  # nothing the books depend on changed: a redelivery, a status
    add_fills(session, body, sorted_.new)
    booked = recompute(
        session,
        bot_id=body.bot_id,
        mode=body.mode,
        product_id=body.product_id,
        product=product,
        allocation=allocation,
        correlation_id=body.correlation_id,
        last_order_event_id=body.message_id,
        products=products,
    )
    if booked is None:
        return None  # an exit order finished with no fill booked for the bot
    position = as_message(booked.position, held)
    save_position(session, position)
    if booked.breach is not None:
        stage(session, subjects.for_token(subjects.LEDGER_BREACHES, body.bot_id), booked.breach)
    return position, booked.breach, len(sorted_.new)
