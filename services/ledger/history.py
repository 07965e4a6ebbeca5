"""A bot's closed positions as a trader reads them afterwards (pure): entries, exits (each with
why its order was asked), tranches, fees, realized P&L, dust and duration, and the adjustments
the exchange made; and the same as CSV rows, one per fill (and one per dust write-off), for a
tax tool or a spreadsheet."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from decimal import Decimal

from services.ledger.accounting import Book, Position
from shared.money import format_decimal

CSV_COLUMNS = (
    "position", "kind", "time", "trade_id", "entry_id", "side", "size", "price", "fee",
    "realized_pnl", "product_id", "reason",
)  # fmt: skip
"""``reason``: why the fill's order was asked (``SIGNAL``, ``STOP_ON_EXCHANGE``...), empty when
the ledger was not told (fills booked before it was)."""


def closed_positions(book: Book) -> list[Position]:
    return [position for position in book.positions if position.status == "closed"]


def duration_s(position: Position) -> int | None:
    if position.closed_at is None:
        return None
    return int((position.closed_at - position.opened_at).total_seconds())


def csv_rows(book: Book, product_id: str) -> Iterator[tuple[str, ...]]:
    """Every fill of every closed position, oldest position first, entries before exits."""

    def text(value: Decimal) -> str:
        return format_decimal(value)

    for position in closed_positions(book):
        number = str(position.number)
        for fill in position.entries:
            yield (
                number, "entry", fill.time.isoformat(), fill.trade_id, fill.entry_id or "",
                "buy", text(fill.size), text(fill.price), text(fill.fee), "", product_id,
                fill.reason or "",
            )  # fmt: skip
        for exit_ in position.exits:
            time = exit_.time.isoformat() if exit_.time else ""
            entry_id = exit_.key if exit_.key != exit_.trade_id else ""
            yield (
                number, "exit", time, exit_.trade_id, entry_id, "sell", text(exit_.size),
                text(exit_.price), text(exit_.fee), text(exit_.realized_pnl), product_id,
                exit_.reason or "",
            )  # fmt: skip
        if position.dust:
            closed = position.closed_at.isoformat() if position.closed_at else ""
            yield (
                number, "dust", closed, "", "", "", text(position.dust), "", "",
                text(-position.dust_cost), product_id, "",
            )  # fmt: skip


def to_csv(book: Book, product_id: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_rows(book, product_id))
    return out.getvalue()
