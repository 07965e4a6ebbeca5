"""From the accounting core's position to the message every other service reads (pure)."""

from __future__ import annotations

import re
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


# What a trader reads; message ids, correlation and the event that triggered it are bookkeeping.
COMPARED = (
    "status", "quantity", "average_entry_price", "break_even_price", "cost_basis", "realized_pnl",
    "realized_pnl_total", "fees_paid", "tranches", "sequence", "tranche_breach",
)  # fmt: skip


def differences(stored: PositionUpdate | None, fresh: PositionUpdate) -> list[tuple[str, str, str]]:
    """What a trader would read differently in ``fresh`` than in ``stored``: (field, stored,
    fresh) for each such field."""
    if stored is None:
        return [("position", "missing", fresh.status)]
    found = []
    for name in COMPARED:
        old, new = getattr(stored, name), getattr(fresh, name)
        if old != new:
            found.append((name, str(old), str(new)))
    return found


_SAME_COUNT = re.compile(r"-r(?:ebuilt-|\d)")
_REVISION = re.compile(r"-r(\d+)")


def as_message(fresh: PositionUpdate, stored: PositionUpdate | None) -> PositionUpdate:
    """``fresh`` as the message to store and publish, beside the ``stored`` one it follows.

    Its id names the fill count (and the exits finished), so books that change at the same
    count, a late earlier event having moved a fill to the place it happened, would repeat the
    stored message's id: the outbox and the stream drop a repeated id, and every reader would
    keep the stale books. Such a position is a revision, ``-r<n>``, with an id of its own; one
    that changes nothing a trader reads is the stored message itself (nothing new to tell)."""
    if stored is None:
        return fresh
    base = fresh.message_id
    tail = stored.message_id[len(base) :] if stored.message_id.startswith(base) else None
    if tail is None or not (tail == "" or _SAME_COUNT.match(tail)):
        return fresh  # another fill count or exit count: an id of its own already
    if not differences(stored, fresh):
        return stored
    revision = max((int(n) for n in _REVISION.findall(tail)), default=0) + 1
    message_id = f"{base}-r{revision}"
    correlation_id = message_id if fresh.correlation_id == base else fresh.correlation_id
    return fresh.model_copy(update={"message_id": message_id, "correlation_id": correlation_id})
