"""What a trader reads from the books (pure): marks, realized P&L by day, a summary.

Nothing here is stored: every figure is derived from the fills on request, so reading never
changes anything and a report always agrees with the facts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from services.ledger.accounting import Book, LedgerFill, unrealized_pnl


@dataclass(frozen=True)
class Mark:
    """The latest price the ledger saw for a product, with its event time."""

    price: Decimal
    time: datetime


@dataclass(frozen=True)
class DayPnl:
    day: date
    realized_pnl: Decimal
    exit_fees: Decimal
    exits: int


def realized_by_day(book: Book, fills: list[LedgerFill]) -> list[DayPnl]:
    """Realized P&L per UTC day of the exit fill; dust written off counts on its closing day."""
    times = {fill.key: fill.time for fill in fills}
    days: dict[date, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0), Decimal(0)])
    for position in book.positions:
        for exit_ in position.exits:
            day = days[times[exit_.key].date()]
            day[0] += exit_.realized_pnl
            day[1] += exit_.fee
            day[2] += 1
        if position.dust_cost and position.closed_at is not None:
            days[position.closed_at.date()][0] -= position.dust_cost
    return [DayPnl(day, pnl, fees, int(count)) for day, (pnl, fees, count) in sorted(days.items())]


def unrealized(book: Book, mark: Mark | None) -> Decimal | None:
    """Unrealized P&L of the open position at the mark; ``None`` without a price (never a guess)."""
    current = book.current
    if current is None:
        return Decimal(0)
    if mark is None:
        return None
    return unrealized_pnl(current, mark.price)
