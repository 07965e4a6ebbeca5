"""The backtest report a trader reads: a table in the terminal, JSON, or a self-contained HTML
page (:func:`write_html`, in ``tranche.backtest.html``). Every figure comes from
:func:`tranche.backtest.metrics.report_of`; docs/backtest-report.md defines them."""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal

from rich.console import Console

from tranche.backtest.equity import EquityPoint
from tranche.backtest.figures import (
    BREAKER_COLUMNS,
    POSITION_COLUMNS,
    SAFETY_COLUMNS,
    breaker_rows,
    figure_rows,
    pct,
    position_rows,
    safety_row,
    section_title,
    when,
)
from tranche.backtest.html import write_html
from tranche.backtest.metrics import Report, SafetyStory, Section, report_of
from tranche.backtest.result import BacktestResult
from tranche.tables import print_fitted

__all__ = ["print_report", "render", "to_json", "write_html", "write_json", "write_outputs"]

Format = Literal["table", "json"]
CURVES = ("equity", "buy_and_hold_equity")


def render(result: BacktestResult, fmt: Format = "table", console: Console | None = None) -> None:
    """Print the report of ``result`` as tables (``table``) or JSON (``json``)."""
    out = console or Console(soft_wrap=True)
    report = report_of(result)
    if fmt == "json":
        out.print(to_json(report), markup=False, highlight=False, soft_wrap=True)
    else:
        print_report(report, out)


def write_json(result: BacktestResult, path: Path, curves: bool = False) -> Path:
    """Write the report of ``result`` to ``path`` as JSON (:func:`to_json`); returns ``path``."""
    path.write_text(to_json(result, curves) + "\n", encoding="utf-8")
    return path


def write_outputs(
    result: BacktestResult, json_path: Path | None, html_path: Path | None, console: Console
) -> None:
    """What ``tranche backtest --json PATH --html PATH`` writes, each file said when written."""
    for path, write in ((json_path, write_json), (html_path, write_html)):
        if path is not None:
            console.print(f"wrote {write(result, path)}", soft_wrap=True, markup=False)


def print_report(report: Report, console: Console) -> None:
    """The report as tables: each bot's figures beside buy-and-hold's, all bots together (for
    each quote currency with more than one bot), every position, the safety story."""
    fee = (
        "unknown (buy-and-hold without fees)"
        if report.fee_rate is None
        else pct(report.fee_rate * 100)
    )
    console.print(
        f"Backtest {when(report.start)} → {when(report.end)}: {report.candles:,} candles",
        soft_wrap=True,
    )
    console.print(f"fee rate {fee}", soft_wrap=True)
    console.print(f"fingerprint {report.fingerprint or '—'}", soft_wrap=True)
    shown = report.bots + [s for s in report.overall if len(s.bot_ids) > 1]
    for section in shown:
        rows = figure_rows(section.performance, section.buy_and_hold)
        print_fitted(console, section_title(section), ("figure", "strategy", "buy & hold"), rows)
    for section in report.bots:
        title = f"Positions of {section.title}"
        if section.positions:
            print_fitted(console, title, POSITION_COLUMNS, position_rows(section.positions))
        else:
            console.print(f"{title}: none (no entry was filled)", soft_wrap=True)
    print_fitted(console, "Safety", SAFETY_COLUMNS, [safety_row(s) for s in shown])
    breakers = [row for s in report.overall for row in breaker_rows(s)]
    if breakers:
        print_fitted(console, "Breakers tripped", BREAKER_COLUMNS, breakers)


def to_json(report: Report | BacktestResult, curves: bool = False) -> str:
    """The report as JSON: money and ratios as decimal strings, times ISO 8601 in UTC. Each
    section's equity curves are given as one point a UTC day (``daily_equity``), or at every
    mark with ``curves``."""
    if isinstance(report, BacktestResult):
        report = report_of(report)
    return json.dumps(_plain(report, curves), indent=2)


def _plain(value: object, curves: bool) -> object:
    if isinstance(value, Section):
        plain = {}
        for f in fields(value):
            if f.name in CURVES and not curves:
                plain[f"daily_{f.name}"] = _plain(_daily(getattr(value, f.name)), curves)
            else:
                plain[f.name] = _plain(getattr(value, f.name), curves)
        return plain
    if isinstance(value, SafetyStory):
        story = {f.name: _plain(getattr(value, f.name), curves) for f in fields(value)}
        return story | {"rejected_total": value.rejected_total}
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name), curves) for f in fields(value)}
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, list | tuple):
        return [_plain(item, curves) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item, curves) for key, item in value.items()}
    return value


def _daily(curve: list[EquityPoint]) -> list[EquityPoint]:
    last: dict[date, EquityPoint] = {}
    for point in curve:
        last[point.at.astimezone(UTC).date()] = point
    return list(last.values())
