"""A position's whole life, with figures worked out by hand (the independent calculation)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.ledger.accounting import LedgerFill, book_fills

T0 = datetime(2018, 1, 20, tzinfo=UTC)


def fills(*rows: tuple[str, str, str, str]) -> list[LedgerFill]:
    """(order, side, size, price) rows, one minute apart, no fees."""
    return [
        LedgerFill(
            trade_id=f"t{n}",
            client_order_id=order,
            side=side,  # type: ignore[arg-type]
            price=Decimal(price),
            size=Decimal(size),
            fee=Decimal(0),
            time=T0 + timedelta(minutes=n),
        )
        for n, (order, side, size, price) in enumerate(rows)
    ]


LIFE = fills(
    ("A", "buy", "1", "100"),
    ("B", "buy", "1", "110"),  # average (100 + 110) / 2 = 105
    *[("X1", "sell", "0.1", "120")] * 5,  # an exit of 0.5 in five partial fills: +7.5
    ("C", "buy", "1.5", "90"),  # re-entry after a partial exit: the third tranche, no breach
    ("X2", "sell", "1", "100"),
    ("X2", "sell", "2", "100"),  # the rest, 3 at 100 against a cost of 292.5: +7.5
    ("D", "buy", "1", "80"),  # a new position
)


def test_three_tranches_partial_exits_re_entry_and_a_new_position() -> None:
    book = book_fills(LIFE, min_size=Decimal("0.001"), size_increment=Decimal("0.00000001"))
    first, second = book.positions
    assert first.status == "closed" and second.status == "open"
    assert [t.client_order_id for t in first.tranches] == ["A", "B", "C"]
    assert not first.tranche_breach
    # Pro rata, by hand: A and B each give 0.25 at 120 (A +5, B +2.5); at the end A gives 0.75
    # at 100 (0), B 0.75 at 100 (-7.5), C 1.5 at 100 (+15).
    assert [t.realized_pnl for t in first.tranches] == [Decimal(5), Decimal(-5), Decimal(15)]
    assert first.realized_pnl == Decimal(15)
    assert [e.realized_pnl for e in first.exits[:5]] == [Decimal("1.5")] * 5
    assert second.quantity == 1 and second.average_entry_price == 80


def test_the_average_entry_after_a_partial_exit_and_a_re_entry() -> None:
    before_final_exit = LIFE[:8]
    book = book_fills(
        before_final_exit, min_size=Decimal("0.001"), size_increment=Decimal("0.00000001")
    )
    position = book.current
    assert position is not None and position.quantity == 3
    # 0.75 @ 100 + 0.75 @ 110 + 1.5 @ 90 = 292.5 over 3
    assert position.average_entry_price == Decimal("97.5")
    assert position.realized_pnl == Decimal("7.5")
