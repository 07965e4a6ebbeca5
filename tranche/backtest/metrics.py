"""The figures of a backtest report, derived from a :class:`BacktestResult` alone (pure, no I/O).

Money is ``Decimal`` in the bot's quote currency and exact (sums of the booked facts); figures
that come from a division are rounded: money to 10 decimal places, percentages and ratios to 6.
Percent figures are in percent (12.5 means 12.5 %). docs/backtest-report.md gives every formula.

Per bot, then overall for each quote currency (bots of different quote currencies never add up).
Buy-and-hold is the same figures for spending the bot's capital on its product at the first mark
(paying the run's fee rate, when the result says it) and holding to the end.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_DOWN, Decimal

from tranche.backtest.equity import (
    HUNDRED,
    ZERO,
    EquityPoint,
    Ratio,
    average_committed,
    daily_returns,
    drawdowns,
    equity_curve,
    share_of_time,
    sharpe,
    sortino,
)
from tranche.backtest.result import (
    BacktestResult,
    BookedFill,
    BotRun,
    BreakerTrip,
    Decision,
    Mark,
    OpenPosition,
    RoundTrip,
)

MONEY_PLACES = Decimal("1e-10")
RATIO_PLACES = Decimal("1e-6")
QUANTITY_PLACES = Decimal("1e-10")
ALL_BOTS = "all bots"
BUY_AND_HOLD = "BUY_AND_HOLD"
"""The reason on buy-and-hold's one (imagined) fill."""


@dataclass(frozen=True)
class Performance:
    """What a strategy made of its capital over the run. ``None``: not defined for this run
    (no round trip for a win rate, no win for an average win)."""

    capital: Decimal
    final_equity: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    total_pnl: Decimal
    return_pct: Decimal
    fees: Decimal
    round_trips: int
    wins: int
    losses: int
    win_rate_pct: Decimal | None
    average_win: Decimal | None
    average_loss: Decimal | None
    max_drawdown: Decimal
    max_drawdown_pct: Decimal
    time_in_market_pct: Decimal
    exposure_pct: Decimal
    trading_days: int
    sharpe: Ratio
    sortino: Ratio


@dataclass(frozen=True)
class PositionPnl:
    """One position's P&L: a closed round trip (``closed_at`` set) or one still open."""

    bot_id: str
    product_id: str
    opened_at: datetime
    closed_at: datetime | None
    tranches: int
    quantity: Decimal
    cost_basis: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    total_pnl: Decimal
    fees: Decimal
    exit_reason: str | None


@dataclass(frozen=True)
class SafetyStory:
    """What safety said: intents approved, rejected by reason code, breakers tripped."""

    approved: int
    rejected: dict[str, int]
    breakers: list[BreakerTrip]

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@dataclass(frozen=True)
class Section:
    """The report on one bot, or on all bots of one quote currency (``bot_ids`` has them)."""

    title: str
    bot_ids: list[str]
    product_ids: list[str]
    quote_currency: str
    performance: Performance
    buy_and_hold: Performance
    safety: SafetyStory
    positions: list[PositionPnl]
    equity: list[EquityPoint]
    buy_and_hold_equity: list[EquityPoint]


@dataclass(frozen=True)
class Report:
    start: datetime
    end: datetime
    candles: int
    fingerprint: str | None
    fee_rate: Decimal | None
    bots: list[Section]
    overall: list[Section]


def report_of(result: BacktestResult) -> Report:
    """Every figure of the report, per bot and overall per quote currency."""
    bots = [_section(result, [bot], bot.bot_id) for bot in result.bots]
    overall = []
    for currency in sorted({bot.quote_currency for bot in result.bots}):
        group = [b for b in result.bots if b.quote_currency == currency]
        if len(group) == 1:  # all bots of the currency are that one bot: the same figures
            alone = next(s for s in bots if s.bot_ids == [group[0].bot_id])
            overall.append(replace(alone, title=ALL_BOTS))
        else:
            overall.append(_section(result, group, ALL_BOTS))
    return Report(
        start=result.start,
        end=result.end,
        candles=result.candles,
        fingerprint=result.fingerprint,
        fee_rate=result.fee_rate,
        bots=bots,
        overall=overall,
    )


def _section(result: BacktestResult, bots: list[BotRun], title: str) -> Section:
    ids = {bot.bot_id for bot in bots}
    products = sorted({bot.product_id for bot in bots})
    capital = sum((bot.capital for bot in bots), ZERO)
    marks = [mark for mark in result.marks if mark.product_id in products]
    fills = [fill for fill in result.fills if fill.bot_id in ids]
    closed = [trip for trip in result.round_trips if trip.bot_id in ids]
    still_open = [position for position in result.open_positions if position.bot_id in ids]
    curve = equity_curve(capital, fills, marks)
    held_fills, held_open = _buy_and_hold(result, bots)
    held_curve = equity_curve(capital, held_fills, marks)
    return Section(
        title=title,
        bot_ids=[bot.bot_id for bot in bots],
        product_ids=products,
        quote_currency=bots[0].quote_currency,
        performance=performance(
            capital, result.start, result.end, curve, fills, closed, still_open
        ),
        buy_and_hold=performance(
            capital, result.start, result.end, held_curve, held_fills, [], held_open
        ),
        safety=safety_story(result.decisions, result.breakers, ids),
        positions=positions(closed, still_open),
        equity=curve,
        buy_and_hold_equity=held_curve,
    )


def performance(
    capital: Decimal,
    start: datetime,
    end: datetime,
    curve: Sequence[EquityPoint],
    fills: Sequence[BookedFill],
    round_trips: Sequence[RoundTrip],
    open_positions: Sequence[OpenPosition],
) -> Performance:
    """The figures of one strategy from its facts and its equity curve (see the module doc)."""
    realized = sum((t.realized_pnl for t in round_trips), ZERO) + sum(
        (p.realized_pnl for p in open_positions), ZERO
    )
    unrealized = sum((p.unrealized_pnl for p in open_positions), ZERO)
    total = realized + unrealized
    wins = [t.realized_pnl for t in round_trips if t.realized_pnl > 0]
    losses = [t.realized_pnl for t in round_trips if t.realized_pnl < 0]
    falls = drawdowns(capital, curve)
    returns = daily_returns(capital, curve)
    held = [(t.opened_at, t.closed_at) for t in round_trips] + [
        (p.opened_at, end) for p in open_positions
    ]
    return Performance(
        capital=capital,
        final_equity=capital + total,
        realized_pnl=realized,
        unrealized_pnl=unrealized,
        total_pnl=total,
        return_pct=_pct(total, capital),
        fees=sum((fill.fee for fill in fills), ZERO),
        round_trips=len(round_trips),
        wins=len(wins),
        losses=len(losses),
        win_rate_pct=_pct(len(wins), len(round_trips)) if round_trips else None,
        average_win=_average(wins),
        average_loss=_average(losses),
        max_drawdown=max((f.drawdown for f in falls), default=ZERO),
        max_drawdown_pct=max((f.drawdown_pct for f in falls), default=ZERO).quantize(RATIO_PLACES),
        time_in_market_pct=(share_of_time(held, start, end) * HUNDRED).quantize(RATIO_PLACES),
        exposure_pct=_pct(average_committed(fills, start, end), capital),
        trading_days=len(returns),
        sharpe=_rounded(sharpe(returns)),
        sortino=_rounded(sortino(returns)),
    )


def positions(
    round_trips: Iterable[RoundTrip], open_positions: Iterable[OpenPosition]
) -> list[PositionPnl]:
    """Every position of the run, closed and open, in the order they were opened."""
    rows = [_position(t, t.closed_at, ZERO, t.exit_reason) for t in round_trips] + [
        _position(p, None, p.unrealized_pnl, None) for p in open_positions
    ]
    return sorted(rows, key=lambda row: (row.opened_at, row.bot_id))


def _position(
    held: RoundTrip | OpenPosition,
    closed_at: datetime | None,
    unrealized: Decimal,
    exit_reason: str | None,
) -> PositionPnl:
    return PositionPnl(
        bot_id=held.bot_id,
        product_id=held.product_id,
        opened_at=held.opened_at,
        closed_at=closed_at,
        tranches=held.tranches,
        quantity=held.quantity,
        cost_basis=held.cost_basis,
        realized_pnl=held.realized_pnl,
        unrealized_pnl=unrealized,
        total_pnl=held.realized_pnl + unrealized,
        fees=held.fees,
        exit_reason=exit_reason,
    )


def safety_story(
    decisions: Iterable[Decision], breakers: Iterable[BreakerTrip], bot_ids: set[str]
) -> SafetyStory:
    """Decisions on these bots' intents; their breakers and every system-wide one (``bot_id``
    None), in the order they tripped. A rejection without a reason counts as ``UNSPECIFIED``."""
    approved = 0
    rejected: Counter[str] = Counter()
    for decision in decisions:
        if decision.bot_id not in bot_ids:
            continue
        if decision.approved:
            approved += 1
        else:
            rejected[decision.reason or "UNSPECIFIED"] += 1
    tripped = [b for b in breakers if b.bot_id is None or b.bot_id in bot_ids]
    return SafetyStory(
        approved=approved,
        rejected=dict(sorted(rejected.items(), key=lambda item: (-item[1], item[0]))),
        breakers=sorted(tripped, key=lambda b: b.at),
    )


def _buy_and_hold(
    result: BacktestResult, bots: Iterable[BotRun]
) -> tuple[list[BookedFill], list[OpenPosition]]:
    """Each bot's capital spent on its product at the product's first mark (the fee, at the
    run's rate, included in the capital spent) and held, marked at the last price."""
    fee_rate = result.fee_rate or ZERO
    fills: list[BookedFill] = []
    held: list[OpenPosition] = []
    for bot in bots:
        marks = [mark for mark in result.marks if mark.product_id == bot.product_id]
        if not marks or bot.capital <= 0:
            continue
        first, last = _first_and_last(marks)
        # Rounded down so that buy-and-hold never spends more than the capital, and every
        # figure after it stays exact.
        size = (bot.capital / (first.price * (1 + fee_rate))).quantize(QUANTITY_PLACES, ROUND_DOWN)
        fee = size * first.price * fee_rate
        cost = size * first.price + fee
        fills.append(
            BookedFill(
                first.at, bot.bot_id, bot.product_id, "BUY", first.price, size, fee, BUY_AND_HOLD
            )
        )
        held.append(
            OpenPosition(
                bot_id=bot.bot_id,
                product_id=bot.product_id,
                opened_at=first.at,
                tranches=1,
                quantity=size,
                cost_basis=cost,
                realized_pnl=ZERO,
                unrealized_pnl=size * last.price - cost,
                fees=fee,
            )
        )
    return fills, held


def _first_and_last(marks: Sequence[Mark]) -> tuple[Mark, Mark]:
    ordered = sorted(marks, key=lambda mark: mark.at)
    return ordered[0], ordered[-1]


def _pct(part: Decimal | int, whole: Decimal | int) -> Decimal:
    if whole == 0:
        return ZERO
    return (Decimal(part) / Decimal(whole) * HUNDRED).quantize(RATIO_PLACES)


def _average(values: Sequence[Decimal]) -> Decimal | None:
    if not values:
        return None
    return (sum(values, ZERO) / len(values)).quantize(MONEY_PLACES)


def _rounded(ratio: Ratio) -> Ratio:
    if ratio.value is None:
        return ratio
    return Ratio(ratio.value.quantize(RATIO_PLACES), None)
