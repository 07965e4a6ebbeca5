"""docs/backtest-report.md defines every figure the report shows and every ranking a sweep
offers: a figure added to the report without its definition fails here."""

from __future__ import annotations

import re

from tests.support.backtest_results import sample
from tranche.backtest.figures import figure_rows
from tranche.backtest.metrics import report_of
from tranche.backtest.sweep import SORT_BY
from tranche.stack import ROOT

DOC = (ROOT / "docs" / "backtest-report.md").read_text()


def defined() -> set[str]:
    """The first cells of the doc's tables, lower case, without their code quotes."""
    cells = re.findall(r"^\| ([^|]+?) \|", DOC, flags=re.M)
    return {cell.strip("`").split("` ")[0].lower() for cell in cells}


def test_every_figure_shown_is_defined() -> None:
    section = report_of(sample()).bots[0]
    shown = [name for name, _, _ in figure_rows(section.performance, section.buy_and_hold)]
    names = {name.split(" (")[0].lower() for name in shown}
    missing = {name for name in names if name not in defined()}
    assert missing == {"capital"}, f"define these in docs/backtest-report.md: {missing}"
    assert "**Capital**" in DOC  # in the terms, above the table


def test_every_sort_key_is_explained() -> None:
    for key in SORT_BY:
        assert f"| `{key}`" in DOC
    assert "overfits" in DOC
