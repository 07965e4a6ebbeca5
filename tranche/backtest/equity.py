"""Equity over time and the figures read off it, from a run's facts alone (pure, no I/O).

Equity is worked out from cash, not from the ledger's per-position books: capital, minus what
every buy paid (fees included), plus what every sell received (fees deducted), plus what is held
marked at the product's latest price. That equals capital + realized + unrealized P&L whichever
way the ledger split its exits across tranches, because an exit moves cost basis from unrealized
to realized and never creates or loses any.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from tranche.backtest.result import BookedFill, Mark

ZERO = Decimal(0)
HUNDRED = Decimal(100)
DAYS_A_YEAR = 365
"""Crypto trades every day of the year: daily ratios are annualised with √365."""
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class EquityPoint:
    """Capital + realized + unrealized P&L at one mark, in the quote currency."""

    at: datetime
    equity: Decimal


@dataclass(frozen=True)
class DrawdownPoint:
    """How far equity stands below its highest value so far (capital counts as the first
    high): in the quote currency and in percent of that high."""

    at: datetime
    drawdown: Decimal
    drawdown_pct: Decimal


@dataclass(frozen=True)
class Ratio:
    """A risk-adjusted ratio, or why it has no value (never a division by zero)."""

    value: Decimal | None
    undefined_because: str | None = None


def by_time(fills: Iterable[BookedFill]) -> list[BookedFill]:
    """Fills in market-time order; fills at the same time keep the order they were booked in."""
    return sorted(fills, key=lambda fill: fill.at)


def equity_curve(
    capital: Decimal, fills: Iterable[BookedFill], marks: Iterable[Mark]
) -> list[EquityPoint]:
    """One point per mark: ``capital + cash flow of the fills up to the mark + holdings × latest
    price``. A fill at the mark's time counts at that mark, valued at the mark's price. Marks of
    products nobody holds still add a point (the curve of several products steps at each)."""
    pending = by_time(fills)
    cash = ZERO
    held: dict[str, Decimal] = {}
    latest: dict[str, Decimal] = {}
    curve: list[EquityPoint] = []
    next_fill = 0
    for mark in sorted(marks, key=lambda m: m.at):
        while next_fill < len(pending) and pending[next_fill].at <= mark.at:
            fill = pending[next_fill]
            flow = fill.price * fill.size
            if fill.side == "BUY":
                cash -= flow + fill.fee
                held[fill.product_id] = held.get(fill.product_id, ZERO) + fill.size
            else:
                cash += flow - fill.fee
                held[fill.product_id] = held.get(fill.product_id, ZERO) - fill.size
            latest[fill.product_id] = fill.price
            next_fill += 1
        latest[mark.product_id] = mark.price
        holdings = ZERO
        for product, size in held.items():
            if size:
                holdings += size * latest[product]
        curve.append(EquityPoint(mark.at, capital + cash + holdings))
    return curve


def drawdowns(capital: Decimal, curve: Sequence[EquityPoint]) -> list[DrawdownPoint]:
    """The drawdown at every point of ``curve``; the running high starts at ``capital``."""
    high = capital
    points: list[DrawdownPoint] = []
    for point in curve:
        if point.equity >= high:
            high = point.equity
            points.append(DrawdownPoint(point.at, ZERO, ZERO))
            continue
        fall = high - point.equity
        points.append(DrawdownPoint(point.at, fall, fall / high * HUNDRED if high > 0 else ZERO))
    return points


def daily_returns(capital: Decimal, curve: Sequence[EquityPoint]) -> list[Decimal]:
    """One return per UTC day that has a mark: the change of equity from the previous such day's
    last mark (capital before the first day) to this day's last mark, divided by ``capital``
    (not by the previous equity: the bot risks its capital, not its gains). A day without any
    mark has no return; the next day's return spans it."""
    if capital <= 0:
        return []
    closes: dict[date, Decimal] = {}
    for point in curve:
        closes[point.at.date()] = point.equity  # the day's last mark wins
    returns: list[Decimal] = []
    previous = capital
    for day in sorted(closes):
        returns.append((closes[day] - previous) / capital)
        previous = closes[day]
    return returns


def sharpe(returns: Sequence[Decimal]) -> Ratio:
    """Annualised Sharpe ratio of daily returns: mean / sample standard deviation × √365, with a
    risk-free rate of zero."""
    if len(returns) < 2:
        return Ratio(None, "fewer than two daily returns")
    mean = _mean(returns)
    variance = sum(((r - mean) ** 2 for r in returns), ZERO) / (len(returns) - 1)
    if variance == 0:
        return Ratio(None, "the daily returns never varied")
    return Ratio(mean / variance.sqrt() * _annualiser())


def sortino(returns: Sequence[Decimal]) -> Ratio:
    """Annualised Sortino ratio of daily returns: mean / downside deviation × √365, the downside
    deviation being √(mean of min(r, 0)²) over every day (target return zero)."""
    if len(returns) < 2:
        return Ratio(None, "fewer than two daily returns")
    downside = sum((min(r, ZERO) ** 2 for r in returns), ZERO) / len(returns)
    if downside == 0:
        return Ratio(None, "no day lost money")
    return Ratio(_mean(returns) / downside.sqrt() * _annualiser())


def average_committed(fills: Iterable[BookedFill], start: datetime, end: datetime) -> Decimal:
    """The capital held in positions, averaged over time from ``start`` to ``end``: each bot's
    cost basis at average cost (entry fees included; an exit releases its share of the cost),
    weighted by how long it was held."""
    span = end - start
    if span <= timedelta(0):
        return ZERO
    cost: dict[tuple[str, str], Decimal] = {}
    size: dict[tuple[str, str], Decimal] = {}
    area = ZERO
    committed = ZERO
    since = start
    for fill in by_time(fills):
        at = min(max(fill.at, start), end)
        area += committed * _micros(at - since)
        since = at
        key = (fill.bot_id, fill.product_id)
        if fill.side == "BUY":
            cost[key] = cost.get(key, ZERO) + fill.price * fill.size + fill.fee
            size[key] = size.get(key, ZERO) + fill.size
        else:
            held = size.get(key, ZERO)
            share = min(fill.size / held, Decimal(1)) if held > 0 else Decimal(1)
            cost[key] = cost.get(key, ZERO) * (1 - share)
            size[key] = max(held - fill.size, ZERO)
        committed = sum(cost.values(), ZERO)
    area += committed * _micros(end - since)
    return area / _micros(span)


def share_of_time(
    intervals: Iterable[tuple[datetime, datetime]], start: datetime, end: datetime
) -> Decimal:
    """The fraction (0..1) of ``start``..``end`` covered by at least one of ``intervals``."""
    span = end - start
    if span <= timedelta(0):
        return ZERO
    covered = timedelta(0)
    reach = start
    for opened, closed in sorted(intervals):
        opened, closed = max(opened, reach), min(closed, end)
        if closed > opened:
            covered += closed - opened
            reach = closed
    return _micros(covered) / _micros(span)


def _mean(values: Sequence[Decimal]) -> Decimal:
    return sum(values, ZERO) / len(values)


def _annualiser() -> Decimal:
    return Decimal(DAYS_A_YEAR).sqrt()


def _micros(span: timedelta) -> Decimal:
    return Decimal(span // _MICROSECOND)
