"""Booking one order event: its new fills in, the bot's position (and any breach report) out.

The position is always recomputed from the stored fills of the bot in its mode, so it can be
rebuilt at any time (``tranche ledger rebuild``) and can never drift from the facts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from services.ledger.accounting import MAX_TRANCHES, Allocation, Book, book_fills
from services.ledger.positions import position_message
from services.ledger.store import booked_fills
from shared.catalog import Product
from shared.contracts import Mode, PositionUpdate, TrancheCapBreach


@dataclass(frozen=True)
class Booked:
    book: Book
    position: PositionUpdate
    breach: TrancheCapBreach | None


def recompute(
    session: Session,
    *,
    bot_id: str,
    mode: Mode,
    product_id: str,
    product: Product,
    allocation: Allocation,
    correlation_id: str | None,
    last_order_event_id: str | None,
    products: Mapping[str, Product],
) -> Booked | None:
    """The bot's book and position message from every fill stored for it in ``mode``, each
    fill booked with its own product's minimum size and increment (``products``, the catalog's:
    a bot may have moved to another product while flat; ``product`` is the current one)."""
    fills, finished = booked_fills(session, bot_id, mode)
    if not fills:
        return None
    book = book_fills(
        fills,
        min_size=product.base_min_size,
        size_increment=product.base_increment,
        allocation=allocation,
        final_orders=finished,
        rules={
            name: (rules.base_min_size, rules.base_increment)
            for name, rules in {**products, product_id: product}.items()
        },
    )
    # A finished exit order may change the books without a new fill (dust closes the position):
    # its message needs an id of its own, while ``sequence`` keeps counting fills, as readers
    # compare it with the fills they have seen.
    exits_finished = {fill.client_order_id for fill in fills if fill.side == "sell"} & finished
    time = max(fill.time for fill in fills)
    position = position_message(
        book=book,
        bot_id=bot_id,
        product_id=product_id,
        mode=mode,
        sequence=len(fills),
        exits_finished=len(exits_finished),
        time=time,
        correlation_id=correlation_id,
        last_order_event_id=last_order_event_id,
    )
    return Booked(book, position, breach_report(book, position, time))


def breach_report(book: Book, position: PositionUpdate, time: datetime) -> TrancheCapBreach | None:
    """A breach report (``tranche.ledger.breaches.<bot>``) while the current position has more
    than three tranches; safety turns it into its ``TRANCHE_CAP_BREACHED`` safety event.

    Its id names the position and the tranche count, so re-booking reports each breach once.
    """
    current = book.current
    if current is None or len(current.tranches) <= MAX_TRANCHES:
        return None
    count = len(current.tranches)
    return TrancheCapBreach(
        message_id=f"breach-{position.mode}-{position.bot_id}-{current.number}-{count}",
        correlation_id=position.correlation_id,
        time=time,
        bot_id=position.bot_id,
        mode=position.mode,
        position_number=current.number,
        tranches=count,
        max_tranches=MAX_TRANCHES,
        message=(
            f"bot {position.bot_id} holds {count} entry tranches in position {current.number}; "
            f"the cap is {MAX_TRANCHES}. Booked as filled: reality wins."
        ),
    )
