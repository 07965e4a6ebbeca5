"""The report's figures on hand-made results, each checked against arithmetic done by hand (or,
for Sharpe, by the standard library on floats)."""

from __future__ import annotations

import math
import statistics
from datetime import timedelta
from decimal import Decimal

import pytest

from tests.support.backtest_results import D, at, bot, fill, marks, result, sample
from tranche.backtest.equity import (
    DAYS_A_YEAR,
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
from tranche.backtest.metrics import report_of
from tranche.backtest.result import BreakerTrip, Decision, Mark

USD = bot("btc", "BTC-USD", "USD", "100")


def usd_marks(*points: tuple[float, str]) -> list[Mark]:
    return [Mark(at(hours), "BTC-USD", D(price)) for hours, price in points]


def one_round_trip(fee_rate: str | None = "0.01"):
    """Buy 5 at 10 (fee 0.05) on day 1, sell 5 at 12 (fee 0.06) on day 2, price 9 on day 3."""
    return result(
        [USD],
        usd_marks((10, "10"), (23, "11"), (36, "12"), (60, "9")),
        [
            fill(10, "BUY", "10", "5", "0.05", "btc", "BTC-USD"),
            fill(36, "SELL", "12", "5", "0.06", "btc", "BTC-USD", "TAKE_PROFIT"),
        ],
        start=at(0),
        end=at(72),
        fee_rate=fee_rate,
    )


def test_a_round_trip_by_hand() -> None:
    figures = report_of(one_round_trip()).bots[0].performance
    # 5 × 12 − 0.06 − (5 × 10 + 0.05)
    assert figures.realized_pnl == figures.total_pnl == D("9.89")
    assert figures.unrealized_pnl == 0
    assert figures.final_equity == D("109.89")
    assert figures.return_pct == D("9.89")
    assert figures.fees == D("0.11")
    assert (figures.round_trips, figures.wins, figures.losses) == (1, 1, 0)
    assert figures.win_rate_pct == 100
    assert figures.average_win == D("9.89")
    assert figures.average_loss is None
    # The only fall: the entry's fee, 100 → 99.95, before equity rose for good.
    assert figures.max_drawdown == D("0.05")
    assert figures.max_drawdown_pct == D("0.05")
    # Held from hour 10 to hour 36 of 72; 50.05 committed for those 26 hours, of 100.
    assert figures.time_in_market_pct == D("36.111111")
    assert figures.exposure_pct == D("18.073611")
    assert figures.trading_days == 3


def test_the_equity_curve_by_hand() -> None:
    section = report_of(one_round_trip()).bots[0]
    assert [p.equity for p in section.equity] == [
        D("99.95"),  # 100 − 50.05 + 5 × 10
        D("104.95"),  # 100 − 50.05 + 5 × 11
        D("109.89"),  # sold: 100 − 50.05 + 59.94
        D("109.89"),  # flat: the price no longer matters
    ]
    assert [p.at for p in section.equity] == [at(10), at(23), at(36), at(60)]


def test_sharpe_is_the_annualised_mean_over_the_sample_deviation_of_daily_returns() -> None:
    figures = report_of(one_round_trip()).bots[0].performance
    daily = [0.0495, 0.0494, 0.0]  # (104.95 − 100) / 100, (109.89 − 104.95) / 100, flat
    expected = statistics.mean(daily) / statistics.stdev(daily) * math.sqrt(365)
    assert figures.sharpe.value is not None
    assert float(figures.sharpe.value) == pytest.approx(expected, abs=1e-6)
    assert figures.sortino == Ratio(None, "no day lost money")


def test_buy_and_hold_spends_the_capital_at_the_first_mark_and_pays_the_fee_rate() -> None:
    held = report_of(one_round_trip()).bots[0].buy_and_hold
    size = D("9.9009900990")  # 100 / (10 × 1.01), rounded down
    fee = size * 10 * D("0.01")
    assert held.fees == fee
    assert held.total_pnl == held.unrealized_pnl == size * 9 - (size * 10 + fee)
    assert held.total_pnl == pytest.approx(D("-10.8910891"), abs=D("1e-7"))
    assert held.round_trips == 0 and held.win_rate_pct is None
    assert held.time_in_market_pct == D("86.111111")  # from hour 10 to 72 of 72
    # Its high is at 12 on day 2; at 9 it is a quarter below.
    assert held.max_drawdown_pct == pytest.approx(D("25"), abs=D("0.001"))


def test_buy_and_hold_without_a_fee_rate_pays_no_fee() -> None:
    held = report_of(one_round_trip(fee_rate=None)).bots[0].buy_and_hold
    assert held.fees == 0
    assert held.total_pnl == D(10) * 9 - 100


def test_no_trades() -> None:
    figures = report_of(
        result([USD], usd_marks((1, "10"), (30, "12")), start=at(0), end=at(48))
    ).bots[0]
    p = figures.performance
    assert (p.total_pnl, p.fees, p.round_trips, p.max_drawdown) == (0, 0, 0, 0)
    assert p.win_rate_pct is None and p.average_win is None and p.average_loss is None
    assert p.time_in_market_pct == 0 and p.exposure_pct == 0
    assert p.sharpe == Ratio(None, "the daily returns never varied")
    assert p.sortino == Ratio(None, "no day lost money")
    assert figures.positions == []
    assert figures.buy_and_hold.total_pnl == 20  # 10 bought at 10, worth 12


def test_one_day_has_no_sharpe() -> None:
    p = (
        report_of(
            result(
                [USD],
                usd_marks((1, "10"), (5, "11")),
                [fill(1, "BUY", "10", "1", bot_id="btc", product="BTC-USD")],
            )
        )
        .bots[0]
        .performance
    )
    assert p.trading_days == 1
    assert p.sharpe == Ratio(None, "fewer than two daily returns")
    assert p.sortino == Ratio(None, "fewer than two daily returns")
    assert p.unrealized_pnl == p.total_pnl == 1


def test_a_losing_only_run() -> None:
    p = (
        report_of(
            result(
                [USD],
                usd_marks((0, "10"), (20, "9"), (30, "10"), (44, "8"), (70, "8")),
                [
                    fill(0, "BUY", "10", "2", "0.1", "btc", "BTC-USD"),
                    fill(20, "SELL", "9", "2", "0.1", "btc", "BTC-USD", "STOP_LOSS"),
                    fill(30, "BUY", "10", "1", "0", "btc", "BTC-USD"),
                    fill(44, "SELL", "8", "1", "0", "btc", "BTC-USD", "STOP_LOSS"),
                ],
            )
        )
        .bots[0]
        .performance
    )
    assert (p.round_trips, p.wins, p.losses) == (2, 0, 2)
    assert p.win_rate_pct == 0
    assert p.average_win is None
    assert p.average_loss == D("-2.1")  # (−2.2 + −2) / 2
    assert p.total_pnl == D("-4.2")
    assert p.max_drawdown == D("4.2") and p.max_drawdown_pct == D("4.2")
    assert p.sharpe.value is not None and p.sharpe.value < 0
    assert p.sortino.value is not None and p.sortino.value < 0


def test_zero_variance_leaves_sharpe_undefined_but_not_a_steady_loss_sortino() -> None:
    # 10 held from 10: equity 99, 98, 97 at each day's close, −1 % of capital every day.
    p = (
        report_of(
            result(
                [USD],
                usd_marks((0, "10"), (23, "9.9"), (47, "9.8"), (71, "9.7")),
                [fill(0, "BUY", "10", "10", bot_id="btc", product="BTC-USD")],
            )
        )
        .bots[0]
        .performance
    )
    assert p.sharpe == Ratio(None, "the daily returns never varied")
    assert p.sortino.value == (-Decimal(DAYS_A_YEAR).sqrt()).quantize(D("1e-6"))


def test_equity_at_the_end_is_capital_plus_the_booked_pnl() -> None:
    report = report_of(sample())
    for section in report.bots + report.overall:
        assert section.equity[-1].equity == section.performance.final_equity
        assert section.buy_and_hold_equity[-1].equity == section.buy_and_hold.final_equity


def test_per_position_pnl_adds_up_to_the_total() -> None:
    report = report_of(sample())
    for section in report.bots:
        assert sum(p.total_pnl for p in section.positions) == section.performance.total_pnl
    still_open = [p for p in report.bots[1].positions if p.closed_at is None]
    assert len(still_open) == 1 and still_open[0].unrealized_pnl < 0


def test_overall_adds_the_bots_of_one_quote_currency() -> None:
    report = report_of(sample())
    (overall,) = report.overall
    assert overall.bot_ids == ["eth-rsi", "eth-macd"]
    assert overall.performance.capital == D("0.6")
    assert overall.performance.total_pnl == sum(s.performance.total_pnl for s in report.bots)
    assert overall.performance.round_trips == 3
    assert overall.performance.win_rate_pct == D("66.666667")


def test_bots_of_different_quote_currencies_never_add_up() -> None:
    made = result(
        [bot("eth"), USD],
        marks(["0.09", "0.1"]) + usd_marks((0, "10"), (1, "11")),
    )
    report = report_of(made)
    assert [(s.quote_currency, s.bot_ids) for s in report.overall] == [
        ("BTC", ["eth"]),
        ("USD", ["btc"]),
    ]


def test_the_safety_story() -> None:
    made = result(
        [bot("a"), bot("b")],
        marks(["0.09", "0.1", "0.11"]),
        decisions=[
            Decision(at(0), "a", "1", True),
            Decision(at(1), "a", "2", False, "ENTRY_COOLDOWN"),
            Decision(at(1), "a", "3", False, "ENTRY_COOLDOWN"),
            Decision(at(2), "a", "4", False, None),
            Decision(at(2), "b", "5", False, "MAX_TRANCHES"),
        ],
        breakers=[
            BreakerTrip(at(2), None, "KILL_SWITCH", "operator"),
            BreakerTrip(at(1), "b", "DAILY_LOSS"),
        ],
    )
    report = report_of(made)
    a, b = (section.safety for section in report.bots)
    assert a.approved == 1
    assert a.rejected == {"ENTRY_COOLDOWN": 2, "UNSPECIFIED": 1}
    assert [t.breaker for t in a.breakers] == ["KILL_SWITCH"]  # system-wide: every bot's
    assert b.rejected == {"MAX_TRANCHES": 1}
    assert [t.breaker for t in b.breakers] == ["DAILY_LOSS", "KILL_SWITCH"]  # in time order
    everyone = report.overall[0].safety
    assert (everyone.approved, everyone.rejected_total, len(everyone.breakers)) == (1, 4, 2)


# The building blocks, on their own.


def test_drawdown_is_measured_from_the_running_high_which_starts_at_capital() -> None:
    curve = [EquityPoint(at(h), D(e)) for h, e in ((0, "95"), (1, "110"), (2, "99"), (3, "120"))]
    falls = drawdowns(D(100), curve)
    assert [(f.drawdown, f.drawdown_pct) for f in falls] == [
        (D(5), D(5)),
        (D(0), D(0)),
        (D(11), D(10)),
        (D(0), D(0)),
    ]


def test_a_day_without_marks_has_no_return_and_the_next_spans_it() -> None:
    curve = [EquityPoint(at(h), D(e)) for h, e in ((1, "101"), (20, "102"), (50, "99"))]
    assert daily_returns(D(100), curve) == [D("0.02"), D("-0.03")]


def test_a_fill_at_a_marks_time_is_valued_at_that_mark_and_products_are_held_apart() -> None:
    fills = [
        fill(0, "BUY", "10", "1", product="A-USD"),
        fill(1, "BUY", "100", "1", product="B-USD"),
    ]
    points = [
        Mark(at(0), "A-USD", D(11)),
        Mark(at(1), "B-USD", D(100)),
        Mark(at(2), "A-USD", D(12)),
    ]
    curve = equity_curve(D(1000), fills, points)
    assert [p.equity for p in curve] == [D(1001), D(1001), D(1002)]


def test_committed_capital_is_time_weighted_and_an_exit_releases_its_share() -> None:
    fills = [fill(0, "BUY", "10", "2"), fill(12, "SELL", "11", "1")]
    assert average_committed(fills, at(0), at(24)) == D(15)  # 20 for 12 h, then 10 for 12 h


def test_overlapping_positions_count_once_in_time_in_market() -> None:
    held = [(at(0), at(10)), (at(5), at(15)), (at(30), at(40))]
    assert share_of_time(held, at(0), at(20)) == D("0.75")
    assert share_of_time(held, at(0), at(0)) == 0


def test_ratios_never_divide_by_zero() -> None:
    assert sharpe([]) == Ratio(None, "fewer than two daily returns")
    assert sharpe([D("0.01")] * 5) == Ratio(None, "the daily returns never varied")
    assert sortino([D("0.01"), D("0.02")]) == Ratio(None, "no day lost money")


def test_an_empty_period_has_no_exposure() -> None:
    assert average_committed([fill(0, "BUY", "1", "1")], at(1), at(1)) == 0
    assert share_of_time([], at(0), at(0) + timedelta(hours=1)) == 0
