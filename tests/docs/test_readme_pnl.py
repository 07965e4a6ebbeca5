"""The README's worked P&L example is not prose: every figure in its tables is checked."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.ledger.accounting import LedgerFill, book_fills
from tranche.apidocs import ROOT

TABLE = re.compile(r"<!-- pnl-example fee_rate=([0-9.]+) -->\n((?:\|.*\n)+)")


def examples() -> list[tuple[Decimal, list[list[str]]]]:
    text = (ROOT / "README.md").read_text()
    found = []
    for rate, table in TABLE.findall(text):
        rows = [
            [cell.strip().replace("−", "-") for cell in line.strip().strip("|").split("|")]
            for line in table.strip().splitlines()[2:]
        ]
        found.append((Decimal(rate), rows))
    return found


def test_the_readme_has_both_worked_examples() -> None:
    assert [rate for rate, _ in examples()] == [Decimal(0), Decimal("0.0025")]


@pytest.mark.parametrize(("fee_rate", "rows"), examples())
def test_every_figure_of_the_worked_example(fee_rate: Decimal, rows: list[list[str]]) -> None:
    fills: list[LedgerFill] = []
    for number, side, size, price, fee, quantity, average, break_even, realized in rows:
        assert Decimal(fee) == Decimal(size) * Decimal(price) * fee_rate, f"fee of fill {number}"
        at = datetime(2018, 1, 20, tzinfo=UTC) + timedelta(minutes=int(number))
        fills.append(
            LedgerFill(
                f"t{number}",
                f"o{number}",
                side,
                Decimal(price),
                Decimal(size),  # type: ignore[arg-type]
                Decimal(fee),
                at,
            )
        )
        position = book_fills(
            fills, min_size=Decimal("0.001"), size_increment=Decimal("0.00000001")
        ).current
        assert position is not None
        assert position.quantity == Decimal(quantity), f"quantity after fill {number}"
        assert position.average_entry_price == Decimal(average), f"average after fill {number}"
        assert position.break_even_price == Decimal(break_even), f"break-even after {number}"
        assert position.realized_pnl == Decimal(realized), f"realized after fill {number}"
