"""Parameter sweeps without a new tool: ``--set bots.<id>.<field>=v1,v2,...`` (repeatable) runs
every combination of the values (their cartesian product), each in a process of its own, and
ranks them by one figure.

A combination is handed to the run function as ``{"bots.<id>.<field>": value, ...}``, each value
already checked against the bot's config (:class:`shared.catalog.Bot`); :func:`apply_overrides`
turns it into the bots to run. The best of many runs fits the data it was chosen on: the ranking
says so, with the number of combinations tried.
"""

from __future__ import annotations

import argparse
import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from pydantic import ValidationError
from rich.console import Console

from shared.catalog import Bot
from tranche.backtest.figures import money, pct, ratio
from tranche.backtest.metrics import Performance, report_of
from tranche.backtest.result import BacktestResult

SortBy = Literal["sharpe", "pnl", "drawdown", "win_rate"]
SORT_BY: tuple[SortBy, ...] = ("sharpe", "pnl", "drawdown", "win_rate")
RunFunction = Callable[[dict[str, object]], BacktestResult]
"""Runs one backtest with these overrides of the bots' config. It goes to the worker processes
by pickle: a function defined at a module's top level, or a ``functools.partial`` of one with
picklable arguments (the file, the period, the bots file)."""


class SweepError(ValueError):
    """A ``--set`` the sweep cannot run, said in one sentence."""


@dataclass(frozen=True)
class Axis:
    """One ``--set``: the values one field of one bot takes across the sweep."""

    bot_id: str
    field: str
    values: tuple[object, ...]

    @property
    def key(self) -> str:
        return f"bots.{self.bot_id}.{self.field}"


@dataclass(frozen=True)
class Outcome:
    """One combination's result: the figures of all its bots together (the first quote currency,
    alphabetically, when the bots have several), or the error that stopped it."""

    overrides: dict[str, object]
    performance: Performance | None = None
    quote_currency: str | None = None
    fingerprint: str | None = None
    """The run's journal fingerprint: the same combination run again must give it again."""
    error: str | None = None


def parse_axes(settings: Sequence[str], bots: Mapping[str, Bot]) -> list[Axis]:
    """Read every ``--set`` and check it against ``bots``: an unknown bot or field, a value the
    bot's config refuses, or one field set twice is a :class:`SweepError`."""
    axes: list[Axis] = []
    for setting in settings:
        axis = _parse_axis(setting, bots)
        if any(other.key == axis.key for other in axes):
            raise SweepError(f"--set {axis.key} is given twice: list all its values in one --set")
        axes.append(axis)
    return axes


def _parse_axis(setting: str, bots: Mapping[str, Bot]) -> Axis:
    target, equals, listed = setting.partition("=")
    parts = target.split(".")
    if not equals or len(parts) != 3 or parts[0] != "bots" or not all(parts) or not listed:
        raise SweepError(f"--set {setting!r} is not of the form bots.<id>.<field>=v1,v2,...")
    _, bot_id, field = parts
    if bot_id not in bots:
        known = ", ".join(sorted(bots)) or "none"
        raise SweepError(f"--set {target}: there is no bot {bot_id!r} (bots: {known})")
    if field not in Bot.model_fields or field == "product_id":
        fields = ", ".join(name for name in Bot.model_fields if name != "product_id")
        raise SweepError(f"--set {target}: a bot has no field {field!r} to sweep ({fields})")
    values = tuple(_checked(bots[bot_id], bot_id, field, text) for text in listed.split(","))
    return Axis(bot_id, field, values)


def _checked(bot: Bot, bot_id: str, field: str, text: str) -> object:
    """The value ``text`` gives the field, as the bot's config reads it ('none': no value)."""
    raw = None if text.strip().lower() == "none" else text.strip()
    try:
        changed = Bot.model_validate({**bot.model_dump(), field: raw})
    except ValidationError as error:
        why = "; ".join(problem["msg"] for problem in error.errors())
        raise SweepError(f"--set bots.{bot_id}.{field}={text}: {why}") from None
    return getattr(changed, field)


def combinations(axes: Sequence[Axis]) -> list[dict[str, object]]:
    """Every combination of the axes' values (the cartesian product), the first axis slowest."""
    keys = [axis.key for axis in axes]
    return [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(axis.values for axis in axes))
    ]


def apply_overrides(bots: Mapping[str, Bot], overrides: Mapping[str, object]) -> dict[str, Bot]:
    """The bots with one combination's values set (each bot validated again as a whole)."""
    changed = dict(bots)
    for key, value in overrides.items():
        _, bot_id, field = key.split(".")
        changed[bot_id] = Bot.model_validate({**changed[bot_id].model_dump(), field: value})
    return changed


def sweep(
    run: RunFunction, combos: Sequence[dict[str, object]], workers: int | None = None
) -> list[Outcome]:
    """Run every combination, each in a process of a pool of ``workers`` (default: one per
    core), and return their outcomes in the order of ``combos``. A run that raises is an
    outcome with its error; the others still run."""
    size = max(1, min(workers or _cores(), len(combos)))
    with ProcessPoolExecutor(max_workers=size) as pool:
        return list(pool.map(_evaluate, itertools.repeat(run), combos))


def _evaluate(run: RunFunction, overrides: dict[str, object]) -> Outcome:
    try:
        result = run(overrides)
        report = report_of(result)
    except Exception as error:  # one failed combination must not stop the sweep
        return Outcome(overrides, error=f"{type(error).__name__}: {error}")
    if not report.overall:
        return Outcome(overrides, error="the run had no bot")
    first = report.overall[0]
    return Outcome(overrides, first.performance, first.quote_currency, result.fingerprint)


def ranked(outcomes: Sequence[Outcome], sort_by: SortBy) -> list[Outcome]:
    """Best first: highest Sharpe, P&L or win rate, or smallest maximum drawdown (in percent).
    Undefined figures and failed runs come last; ties keep the combinations' order."""

    def key(outcome: Outcome) -> tuple[int, Decimal]:
        figure = _figure(outcome.performance, sort_by) if outcome.performance else None
        if figure is None:
            return (1, Decimal(0))
        return (0, figure if sort_by == "drawdown" else -figure)

    return sorted(outcomes, key=key)


def _figure(performance: Performance, sort_by: SortBy) -> Decimal | None:
    if sort_by == "sharpe":
        return performance.sharpe.value
    if sort_by == "pnl":
        return performance.total_pnl
    if sort_by == "drawdown":
        return performance.max_drawdown_pct
    return performance.win_rate_pct


def overfitting_warning(combinations_tried: int) -> str:
    return (
        f"Warning: this is the best of {combinations_tried} combinations on the same data, so "
        "it overfits: its figures flatter it. Check it on data it was not chosen on (another "
        "period or product) before trusting it."
    )


def print_sweep(console: Console, outcomes: Sequence[Outcome], sort_by: SortBy) -> None:
    """One line per combination, best first by ``sort_by``, then the overfitting warning."""
    console.print(f"{len(outcomes)} combinations, best {sort_by.replace('_', ' ')} first:")
    for rank, outcome in enumerate(ranked(outcomes, sort_by), start=1):
        console.print(f"{rank:>3}  {sweep_line(outcome)}", markup=False, soft_wrap=True)
    console.print(overfitting_warning(len(outcomes)), soft_wrap=True)


def sweep_line(outcome: Outcome) -> str:
    setting = " ".join(f"{key}={_shown(value)}" for key, value in outcome.overrides.items())
    p = outcome.performance
    if p is None:
        return f"{setting}  failed: {outcome.error}"
    return (
        f"{setting}  pnl {money(p.total_pnl, True)} {outcome.quote_currency} "
        f"({pct(p.return_pct, True)})  max drawdown {pct(p.max_drawdown_pct)}  "
        f"win rate {pct(p.win_rate_pct)}  sharpe {ratio(p.sharpe)}  "
        f"sortino {ratio(p.sortino)}  round trips {p.round_trips}"
    )


def _shown(value: object) -> str:
    return "none" if value is None else str(value)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def add_sweep_options(command: argparse.ArgumentParser) -> None:
    """``--set`` (repeatable) and ``--sort-by`` on a command that runs backtests."""
    command.add_argument(
        "--set",
        dest="sweep",
        action="append",
        default=[],
        metavar="bots.ID.FIELD=V1,V2,...",
        help="sweep: run every combination of these values (repeatable), one process each",
    )
    command.add_argument(
        "--sort-by", choices=SORT_BY, default="sharpe", help="the sweep's ranking (default: sharpe)"
    )


def run_sweep(
    run: RunFunction,
    bots: Mapping[str, Bot],
    settings: Sequence[str],
    sort_by: SortBy,
    console: Console,
    workers: int | None = None,
) -> int:
    """What ``--set`` does on the command line: check, run, rank, print. Returns the exit code:
    2 (and the one sentence) for a ``--set`` that cannot run, 1 if every run failed."""
    try:
        combos = combinations(parse_axes(settings, bots))
    except SweepError as error:
        console.print(str(error), markup=False, soft_wrap=True)
        return 2
    outcomes = sweep(run, combos, workers)
    print_sweep(console, outcomes, sort_by)
    return 1 if all(outcome.error for outcome in outcomes) else 0
