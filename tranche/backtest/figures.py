"""How the report's figures read: the same rows for the terminal and the HTML page."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal

from tranche.backtest.equity import Ratio
from tranche.backtest.metrics import Performance, PositionPnl, Section

SHOWN_PLACES = Decimal("1e-8")
"""Money is shown to 8 decimal places (a satoshi); JSON carries every digit."""
NONE = "—"


def money(value: Decimal | None, signed: bool = False) -> str:
    if value is None:
        return NONE
    shown = value.quantize(SHOWN_PLACES).normalize()
    text = f"{shown:f}"
    if text in ("-0", "0"):
        return "0"
    return f"+{text}" if signed and value > 0 else text


def pct(value: Decimal | None, signed: bool = False) -> str:
    if value is None:
        return NONE
    return f"{value:+.2f} %" if signed else f"{value:.2f} %"


def ratio(value: Ratio) -> str:
    if value.value is None:
        return f"n/a ({value.undefined_because})"
    return f"{value.value:.2f}"


def when(at: datetime | None) -> str:
    """A time as ISO 8601 in UTC, to the minute (``2018-01-22T12:00Z``)."""
    if at is None:
        return NONE
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def figure_rows(strategy: Performance, held: Performance) -> list[tuple[str, str, str]]:
    """(figure, the strategy's value, buy-and-hold's value) for every figure of a section."""

    def row(name: str, show: Callable[[Performance], str]) -> tuple[str, str, str]:
        return (name, show(strategy), show(held))

    return [
        row("capital", lambda p: money(p.capital)),
        row("final equity", lambda p: money(p.final_equity)),
        row("total P&L", lambda p: f"{money(p.total_pnl, True)} ({pct(p.return_pct, True)})"),
        row("realized P&L", lambda p: money(p.realized_pnl, True)),
        row("unrealized P&L", lambda p: money(p.unrealized_pnl, True)),
        row("fees", lambda p: money(p.fees)),
        row("round trips (won/lost)", lambda p: f"{p.round_trips} ({p.wins}/{p.losses})"),
        row("win rate", lambda p: pct(p.win_rate_pct)),
        row("average win", lambda p: money(p.average_win, True)),
        row("average loss", lambda p: money(p.average_loss, True)),
        row("max drawdown", lambda p: f"{money(p.max_drawdown)} ({pct(p.max_drawdown_pct)})"),
        row("time in market", lambda p: pct(p.time_in_market_pct)),
        row("exposure", lambda p: pct(p.exposure_pct)),
        row("Sharpe (daily, ×√365)", lambda p: ratio(p.sharpe)),
        row("Sortino (daily, ×√365)", lambda p: ratio(p.sortino)),
        row("days with a return", lambda p: str(p.trading_days)),
    ]


POSITION_COLUMNS = ("opened", "closed", "tranches", "P&L", "fees", "exit")


def position_rows(positions: Iterable[PositionPnl]) -> list[list[str]]:
    """One row a position (of one bot); an open one's P&L is realized + unrealized (JSON has
    both)."""
    return [
        [
            when(p.opened_at),
            when(p.closed_at) if p.closed_at else "open",
            str(p.tranches),
            money(p.total_pnl, True),
            money(p.fees),
            p.exit_reason or NONE,
        ]
        for p in positions
    ]


SAFETY_COLUMNS = ("bot", "approved", "rejected", "rejected by reason", "breakers tripped")


def safety_row(section: Section) -> list[str]:
    story = section.safety
    reasons = ", ".join(f"{code} {count}" for code, count in story.rejected.items())
    return [
        section.title,
        str(story.approved),
        str(story.rejected_total),
        reasons or NONE,
        str(len(story.breakers)),
    ]


BREAKER_COLUMNS = ("when", "bot", "breaker", "detail")


def breaker_rows(section: Section) -> list[list[str]]:
    return [
        [when(b.at), b.bot_id or "system", b.breaker, b.detail or NONE]
        for b in section.safety.breakers
    ]


def section_title(section: Section) -> str:
    products = ", ".join(section.product_ids)
    return f"{section.title} · {products} · capital {money(section.performance.capital)} " + (
        section.quote_currency
    )
