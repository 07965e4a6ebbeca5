"""The report as one self-contained HTML page: plotly.js is inlined, so the page opens offline and
asks nothing of the network. Per bot: its figures beside buy-and-hold's, the price with every
entry and exit marked, the equity curve against buy-and-hold, the drawdown, the safety story and
the positions; then all bots together for each quote currency with more than one bot."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import plotly.graph_objects as go
import plotly.io
import plotly.offline
from plotly.subplots import make_subplots

from tranche.backtest.equity import drawdowns
from tranche.backtest.figures import (
    BREAKER_COLUMNS,
    POSITION_COLUMNS,
    SAFETY_COLUMNS,
    breaker_rows,
    figure_rows,
    money,
    pct,
    position_rows,
    safety_row,
    section_title,
    when,
)
from tranche.backtest.metrics import Report, Section, report_of
from tranche.backtest.result import BacktestResult, BookedFill, Mark

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.2rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
section { border-top: 2px solid #444; margin-top: 2rem; }
.note { color: #555; }
"""
ENTRY, EXIT = "#1a9850", "#d73027"
STRATEGY, HOLD = "#2c5fb4", "#a0a0a0"
PLOT_CONFIG = {"displaylogo": False}


def write_html(result: BacktestResult, path: Path) -> Path:
    """Write the report of ``result`` to ``path`` as one HTML file; returns ``path``."""
    path.write_text(page(result), encoding="utf-8")
    return path


def page(result: BacktestResult) -> str:
    report = report_of(result)
    fee = "unknown" if report.fee_rate is None else pct(report.fee_rate * 100)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>Backtest report</title>',
        f"<style>{STYLE}</style>",
        f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>',
        "</head><body>",
        "<h1>Backtest report</h1>",
        f'<p class="period">{escape(when(report.start))} → {escape(when(report.end))}: '
        f"{report.candles:,} candles, fee rate {escape(fee)}, fingerprint "
        f"<code>{escape(report.fingerprint or '—')}</code>. Times are UTC.</p>",
    ]
    for number, section in enumerate(report.bots):
        fills = [fill for fill in result.fills if fill.bot_id == section.bot_ids[0]]
        marks = [mark for mark in result.marks if mark.product_id in section.product_ids]
        parts.append(_section(section, f"bot-{number}", "bot", _bot_figure(section, marks, fills)))
    for number, section in enumerate(s for s in report.overall if len(s.bot_ids) > 1):
        parts.append(_section(section, f"all-{number}", "overall", _overall_figure(section)))
    parts.append(_breakers(report))
    parts.append("</body></html>")
    return "\n".join(parts)


def _section(section: Section, key: str, kind: str, figure: go.Figure) -> str:
    rows = figure_rows(section.performance, section.buy_and_hold)
    plot = plotly.io.to_html(
        figure, include_plotlyjs=False, full_html=False, div_id=f"plot-{key}", config=PLOT_CONFIG
    )
    return "\n".join(
        [
            f'<section class="{kind}" data-bots="{escape(" ".join(section.bot_ids))}" '
            f'data-positions="{len(section.positions)}">',
            f"<h2>{escape(section_title(section))}</h2>",
            _table(("figure", "strategy", "buy & hold"), rows, "figures"),
            plot,
            "<h3>Safety</h3>",
            _table(SAFETY_COLUMNS, [safety_row(section)], "safety"),
            "<h3>Positions</h3>" if kind == "bot" else "",
            _table(POSITION_COLUMNS, position_rows(section.positions), "positions")
            if kind == "bot" and section.positions
            else "",
            "</section>",
        ]
    )


def _breakers(report: Report) -> str:
    rows = [row for section in report.overall for row in breaker_rows(section)]
    if not rows:
        return '<p class="note">No breaker tripped.</p>'
    return "<h2>Breakers tripped</h2>" + _table(BREAKER_COLUMNS, rows, "breakers")


def _table(columns: Sequence[str], rows: Iterable[Sequence[str]], kind: str) -> str:
    head = "".join(f"<th>{escape(column)}</th>" for column in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f'<table class="{kind}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _bot_figure(section: Section, marks: Sequence[Mark], fills: Sequence[BookedFill]) -> go.Figure:
    figure = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.04,
        row_heights=[0.45, 0.35, 0.2],
        subplot_titles=("price, entries and exits", "equity", "drawdown (%)"),
    )
    figure.add_trace(
        go.Scatter(
            x=[_x(m.at) for m in marks],
            y=[float(m.price) for m in marks],
            mode="lines",
            name="price",
            line={"color": "#555", "width": 1},
        ),
        row=1,
        col=1,
    )
    for side, name, symbol, color in (
        ("BUY", "entries", "triangle-up", ENTRY),
        ("SELL", "exits", "triangle-down", EXIT),
    ):
        chosen = [fill for fill in fills if fill.side == side]
        figure.add_trace(
            go.Scatter(
                x=[_x(f.at) for f in chosen],
                y=[float(f.price) for f in chosen],
                mode="markers",
                name=name,
                marker={"symbol": symbol, "size": 11, "color": color},
                text=[f"{f.reason}: {money(f.size)} at {money(f.price)}" for f in chosen],
                hoverinfo="text+x",
            ),
            row=1,
            col=1,
        )
    _equity_and_drawdown(figure, section, first_row=2)
    figure.update_layout(height=820)
    return figure


def _overall_figure(section: Section) -> go.Figure:
    figure = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        row_heights=[0.65, 0.35],
        subplot_titles=("equity", "drawdown (%)"),
    )
    _equity_and_drawdown(figure, section, first_row=1)
    figure.update_layout(height=560)
    return figure


def _equity_and_drawdown(figure: go.Figure, section: Section, first_row: int) -> None:
    capital = section.performance.capital
    for curve, name, color in (
        (section.equity, "strategy", STRATEGY),
        (section.buy_and_hold_equity, "buy & hold", HOLD),
    ):
        figure.add_trace(
            go.Scatter(
                x=[_x(p.at) for p in curve],
                y=[float(p.equity) for p in curve],
                mode="lines",
                name=f"equity, {name}",
                line={"color": color},
            ),
            row=first_row,
            col=1,
        )
        falls = drawdowns(capital, curve)
        figure.add_trace(
            go.Scatter(
                x=[_x(p.at) for p in falls],
                y=[-float(p.drawdown_pct) for p in falls],
                mode="lines",
                name=f"drawdown, {name}",
                line={"color": color},
                fill="tozeroy" if name == "strategy" else None,
            ),
            row=first_row + 1,
            col=1,
        )
    figure.update_layout(
        margin={"l": 60, "r": 20, "t": 40, "b": 30}, legend={"orientation": "h", "y": -0.05}
    )


def _x(at: datetime) -> str:
    """plotly.js reads dates without a zone; the page says they are UTC. (Prices and equity go
    to the plot as floats: plotting only, every figure in text stays Decimal.)"""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
