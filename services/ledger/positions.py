"""From the accounting core's position to the message every other service reads (pure)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from services.ledger.accounting import Book
from shared.contracts import Mode, PositionUpdate, TrancheView


def position_message(
    *,
    book: Book,
    bot_id: str,
    product_id: str,
    mode: Mode,
    sequence: int,
    time: datetime,
    correlation_id: str | None,
    last_order_event_id: str | None,
    exits_finished: int = 0,
) -> PositionUpdate:
    """The bot's current position (flat when none is open): ``realized_pnl`` of the current
    position, ``realized_pnl_total`` of all of them; ``sequence`` counts the fills booked for the
    bot in this mode, so a reader can tell the newer of two updates (an exit order finishing with
    no new fill may close the position at the same ``sequence``: the later message wins, and its
    id names the finished exits, ``exits_finished``, so it is not dropped as a duplicate)."""
    current = book.current
    message_id = f"position-{mode}-{bot_id}-{sequence}"
    if exits_finished:
        message_id += f"-x{exits_finished}"
    common = {
        "message_id": message_id,
        "correlation_id": correlation_id or message_id,
        "time": time,
        "bot_id": bot_id,
        "product_id": product_id,
        "mode": mode,
        "sequence": sequence,
        "last_order_event_id": last_order_event_id,
        "realized_pnl_total": sum((p.realized_pnl for p in book.positions), Decimal(0)),
    }
    if current is None:
        return PositionUpdate(
            position_id=None,
            status="flat",
            quantity=Decimal(0),
            average_entry_price=None,
            break_even_price=None,
            cost_basis=Decimal(0),
            realized_pnl=Decimal(0),
            fees_paid=Decimal(0),
            tranches=[],
            **common,
        )
    return PositionUpdate(
        position_id=f"{bot_id}-{mode}-{current.number}",
        status="open",
        quantity=current.quantity,
        average_entry_price=current.average_entry_price,
        break_even_price=current.break_even_price,
        cost_basis=current.cost_basis,
        realized_pnl=current.realized_pnl,
        fees_paid=current.fees_paid,
        tranche_breach=current.tranche_breach,
        tranches=[
            TrancheView(
                index=tranche.index,
                client_order_id=tranche.client_order_id,
                entry_price=tranche.entry_price,
                size=tranche.size,
                remaining_size=tranche.remaining_size,
                fees=tranche.entry_fees,
                realized_pnl=tranche.realized_pnl,
            )
            for tranche in current.tranches
        ],
        **common,
    )
