"""``tranche status`` and ``tranche replay`` tables at 80 columns (a terminal's default, and
rich's width without one): every bot name and figure whole, nothing wider than the console."""

from __future__ import annotations

import io

from rich.console import Console

from tranche.status import render
from tranche.tables import print_fitted

POSITION = {
    "bot_id": "eth-btc-momentum",
    "mode": "mock",
    "status": "open",
    "quantity": "0.1123456789",
    "average_entry_price": "0.0412345678",
    "break_even_price": "0.0413456789",
    "tranches": [{}, {}],
    "realized_pnl": "-0.0004361442139035",
    "unrealized_pnl": "0.00012345678",
    "realized_pnl_total": "-0.0012345678901",
}


def printed(width: int, draw) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    draw(console)
    return console.file.getvalue()


def test_status_at_80_columns_keeps_every_name_and_figure_whole() -> None:
    status = {"services": {}, "views": {}, "positions": [POSITION], "decisions": []}
    text = printed(80, lambda console: render(status, console))
    assert "…" not in text
    assert all(len(line) <= 80 for line in text.splitlines()), text
    for value in POSITION.values():
        if isinstance(value, str) and value != "mock":
            assert value in text, (value, text)


def test_a_table_that_fits_is_one_table() -> None:
    rows = [("eth-btc-momentum", "13", "-0.0004361442139035")]
    text = printed(120, lambda c: print_fitted(c, "t", ("bot", "fills", "P&L"), rows, "cap"))
    header = next(line for line in text.splitlines() if "bot" in line)
    assert "fills" in header and "P&L" in header
    assert "eth-btc-momentum" in text and "cap" in text


def test_a_table_too_wide_is_printed_record_by_record() -> None:
    columns = ("bot", *(f"figure {n}" for n in range(8)))
    rows = [("xrp-eth-trades-bot", *("-0.0004361442139035" for _ in range(8)))]
    text = printed(80, lambda c: print_fitted(c, "wide", columns, rows, "fingerprint abc"))
    assert "…" not in text
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "bot: xrp-eth-trades-bot" in text
    assert text.count("-0.0004361442139035") == 8
    assert "fingerprint abc" in text
