"""``--set bots.<id>.<field>=v1,v2,...``: checked against the bots' config, expanded to every
combination, run in a process pool (a stand-in run function: the engine is tested on its own),
ranked by the chosen figure, with the overfitting warning."""

from __future__ import annotations

import functools
import io
import os
from dataclasses import replace
from decimal import Decimal

import pytest
from rich.console import Console

from shared.catalog import Bot
from tests.support.backtest_results import D, fake_run
from tranche.backtest.equity import Ratio
from tranche.backtest.sweep import (
    Axis,
    Outcome,
    SweepError,
    apply_overrides,
    combinations,
    parse_axes,
    ranked,
    run_sweep,
    sweep,
)

BOTS = {
    "eth": Bot(product_id="ETH-BTC", quote_size=Decimal("0.1")),
    "xrp": Bot(product_id="XRP-ETH", quote_size=Decimal("10"), stop_loss_pct=Decimal(3)),
}


def test_each_set_becomes_an_axis_of_checked_values() -> None:
    axes = parse_axes(
        [
            "bots.eth.stop_loss_pct=1.5,2,none",
            "bots.xrp.confirm_evaluations=2,5",
            "bots.eth.exit_allocation=fifo,pro_rata",
        ],
        BOTS,
    )
    assert axes == [
        Axis("eth", "stop_loss_pct", (Decimal("1.5"), Decimal(2), None)),
        Axis("xrp", "confirm_evaluations", (2, 5)),
        Axis("eth", "exit_allocation", ("fifo", "pro_rata")),
    ]


@pytest.mark.parametrize(
    ("setting", "sentence"),
    [
        (
            "bots.btc.stop_loss_pct=1",
            "bots.btc.stop_loss_pct: there is no bot 'btc' (bots: eth, xrp)",
        ),
        ("bots.eth.stop_los_pct=1", "bots.eth.stop_los_pct: a bot has no field 'stop_los_pct'"),
        ("bots.eth.product_id=BTC-USD", "a bot has no field 'product_id' to sweep"),
        ("bots.eth.stop_loss_pct=2,150", "stop_loss_pct is a percentage between 0 and 100"),
        ("bots.eth.confirm_evaluations=two", "=two: Input should be a valid integer"),
        ("eth.stop_loss_pct=1", "is not of the form bots.<id>.<field>=v1,v2,..."),
        ("bots.eth.stop_loss_pct", "is not of the form bots.<id>.<field>=v1,v2,..."),
        ("bots.eth.stop_loss_pct=", "is not of the form bots.<id>.<field>=v1,v2,..."),
    ],
)
def test_a_set_that_cannot_run_is_refused_with_one_sentence(setting: str, sentence: str) -> None:
    with pytest.raises(SweepError) as refused:
        parse_axes([setting], BOTS)
    assert sentence in str(refused.value)
    assert "\n" not in str(refused.value)


def test_one_field_set_twice_is_refused() -> None:
    with pytest.raises(SweepError, match="given twice"):
        parse_axes(["bots.eth.stop_loss_pct=1", "bots.eth.stop_loss_pct=2"], BOTS)


def test_the_combinations_are_the_cartesian_product_first_axis_slowest() -> None:
    axes = [Axis("eth", "stop_loss_pct", (1, 2)), Axis("xrp", "confirm_evaluations", (3, 4, 5))]
    combos = combinations(axes)
    assert len(combos) == 6
    assert combos[0] == {"bots.eth.stop_loss_pct": 1, "bots.xrp.confirm_evaluations": 3}
    assert combos[2] == {"bots.eth.stop_loss_pct": 1, "bots.xrp.confirm_evaluations": 5}
    assert combos[5] == {"bots.eth.stop_loss_pct": 2, "bots.xrp.confirm_evaluations": 5}
    assert combinations([]) == [{}]  # no --set: the one run as configured


def test_overrides_change_only_the_named_bot_and_field() -> None:
    changed = apply_overrides(
        BOTS, {"bots.xrp.stop_loss_pct": None, "bots.eth.confirm_evaluations": 7}
    )
    assert changed["xrp"].stop_loss_pct is None
    assert changed["xrp"].quote_size == Decimal(10)
    assert changed["eth"].confirm_evaluations == 7
    assert BOTS["eth"].confirm_evaluations == 3  # the catalog itself is untouched


def test_every_combination_runs_in_a_worker_process_in_order() -> None:
    combos = combinations(parse_axes(["bots.eth.stop_loss_pct=1,2,3,4"], BOTS))
    outcomes = sweep(fake_run, combos, workers=2)
    assert [o.overrides for o in outcomes] == combos
    assert all(o.error is None for o in outcomes)
    pids = {o.fingerprint for o in outcomes}
    assert str(os.getpid()) not in pids  # not run in this process
    assert len(pids) <= 2  # a pool of two
    # The stand-in's exit price rises with the stop: so does the P&L (exit − entry, size 1).
    pnl = [o.performance.total_pnl for o in outcomes if o.performance]
    assert pnl == [Decimal("0.0007"), Decimal("0.0017"), Decimal("0.0027"), Decimal("0.0037")]
    assert {o.quote_currency for o in outcomes} == {"BTC"}


def test_a_run_with_its_arguments_bound_by_partial_goes_to_the_workers_too() -> None:
    combos = combinations(parse_axes(["bots.eth.stop_loss_pct=1,2"], BOTS))
    outcomes = sweep(functools.partial(fake_run, size="2"), combos, workers=2)
    pnl = [o.performance.total_pnl for o in outcomes if o.performance]
    assert pnl == [Decimal("0.0014"), Decimal("0.0034")]  # twice the size of the test above


def test_a_failing_combination_is_reported_and_the_others_still_run() -> None:
    combos = combinations(parse_axes(["bots.eth.take_profit_pct=12,13,14"], BOTS))
    outcomes = sweep(fake_run, combos, workers=2)
    assert [o.error for o in outcomes] == [None, "RuntimeError: unlucky thirteen", None]
    assert ranked(outcomes, "pnl")[-1].error is not None


def _outcome(name: str, **figures: object) -> Outcome:
    base = sweep(fake_run, [{}], workers=1)[0].performance
    assert base is not None
    return Outcome({"bots.eth.label": name}, replace(base, **figures), "BTC")


def test_ranking_by_each_figure() -> None:
    never = Ratio(None, "the daily returns never varied")
    a = _outcome(
        "a", total_pnl=D(1), max_drawdown_pct=D(5), win_rate_pct=None, sharpe=Ratio(D("0.5"))
    )
    b = _outcome("b", total_pnl=D(3), max_drawdown_pct=D(9), win_rate_pct=D(60), sharpe=never)
    c = _outcome(
        "c", total_pnl=D(2), max_drawdown_pct=D(1), win_rate_pct=D(40), sharpe=Ratio(D("1.5"))
    )
    failed = Outcome({"bots.eth.label": "d"}, error="boom")

    def order(sort_by: str) -> list[str]:
        outcomes = ranked([a, b, c, failed], sort_by)
        return [str(o.overrides["bots.eth.label"]) for o in outcomes]

    assert order("pnl") == ["b", "c", "a", "d"]
    assert order("drawdown") == ["c", "a", "b", "d"]  # smallest drawdown first
    assert order("sharpe") == ["c", "a", "b", "d"]  # undefined after every defined one
    assert order("win_rate") == ["b", "c", "a", "d"]


def printed(*settings: str, sort_by: str = "pnl") -> tuple[int, str]:
    console = Console(width=200, file=io.StringIO(), color_system=None)
    code = run_sweep(fake_run, BOTS, settings, sort_by, console, workers=2)
    return code, console.file.getvalue()


def test_the_command_prints_one_line_per_combination_best_first_and_warns() -> None:
    code, text = printed("bots.eth.stop_loss_pct=1,3,2", "bots.eth.confirm_evaluations=3,4")
    assert code == 0
    lines = text.splitlines()
    assert lines[0] == "6 combinations, best pnl first:"
    ranked_lines = lines[1:7]
    assert [line.split()[0] for line in ranked_lines] == ["1", "2", "3", "4", "5", "6"]
    best, worst = ranked_lines[0], ranked_lines[-1]
    assert "bots.eth.stop_loss_pct=3 bots.eth.confirm_evaluations=3  pnl +0.0027 BTC" in best
    assert "bots.eth.stop_loss_pct=1 bots.eth.confirm_evaluations=4  pnl +0.0006 BTC" in worst
    for line in ranked_lines:
        assert "max drawdown" in line and "sharpe" in line and "win rate" in line
    warning = " ".join(lines[7:])
    assert "best of 6 combinations" in warning and "overfits" in warning


def test_the_command_refuses_an_unknown_bot_before_running_anything() -> None:
    code, text = printed("bots.nope.stop_loss_pct=1")
    assert code == 2
    assert text.strip() == "--set bots.nope.stop_loss_pct: there is no bot 'nope' (bots: eth, xrp)"
