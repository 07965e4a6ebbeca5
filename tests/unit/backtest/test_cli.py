"""``tranche backtest``: the command's summary and JSON, and how it tells a broken parity (the
first message where the two runs part)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from rich.console import Console

from shared.catalog import load_catalog
from tranche.backtest.cli import print_parity
from tranche.backtest.engine import Options, run_backtest
from tranche.backtest.parity import Parity
from tranche.journal import differences, fingerprint
from tranche.replay import slice_rows
from tranche.stack import ROOT


def test_the_command_prints_a_summary_and_writes_json(tmp_path: Path) -> None:
    data = tmp_path / "ETH-BTC-1m.csv"
    slice_rows(ROOT / "data" / "ETH-BTC-1m.csv", data, rows=600)
    command = [sys.executable, "-m", "tranche", "backtest", str(data), "--json"]
    done = subprocess.run(
        [*command, str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120,
        check=False, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "eth-btc-momentum" in done.stdout and "600 candles in" in done.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["candles"] == 600 and report["fingerprint"] in done.stdout
    assert [bot["bot_ids"] for bot in report["bots"]] == [["eth-btc-momentum"]]
    assert report["start"] == "2018-01-20T04:54:00+00:00"  # the first candle's close
    assert report["fee_rate"] == "0.006"  # the executor's default: buy-and-hold pays it too
    assert "Safety" in done.stdout and "buy & hold" in done.stdout


def test_a_sweep_runs_each_combination_and_ranks_them(tmp_path: Path) -> None:
    data = tmp_path / "ETH-BTC-1m.csv"
    slice_rows(ROOT / "data" / "ETH-BTC-1m.csv", data, rows=600)
    setting = "bots.eth-btc-momentum.take_profit_pct=1,3"
    done = subprocess.run(
        [sys.executable, "-m", "tranche", "backtest", str(data), "--set", setting,
         "--sort-by", "pnl"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if "take_profit_pct=" in line]
    assert len(lines) == 2 and all(" pnl " in line for line in lines)
    pnls = [Decimal(line.split(" pnl ")[1].split()[0]) for line in lines]
    assert pnls == sorted(pnls, reverse=True)  # best P&L first
    assert "best of 2 combinations" in done.stdout and "overfits" in done.stdout
    alone = [asyncio.run(run_backtest(swept(value), [("ETH-BTC", data)])) for value in ("1", "3")]
    shown = sorted(total_pnl(run.result).quantize(Decimal("1e-8")) for run in alone)
    assert sorted(pnls) == shown  # each line is a real run of its setting


def swept(take_profit: str):
    catalog = load_catalog(None)
    bot = catalog.bots["eth-btc-momentum"].model_copy(
        update={"take_profit_pct": Decimal(take_profit)}
    )
    return catalog.model_copy(update={"bots": catalog.bots | {"eth-btc-momentum": bot}})


def total_pnl(result) -> Decimal:
    from tranche.backtest.metrics import report_of

    return report_of(result).overall[0].performance.total_pnl


def test_a_broken_parity_shows_the_first_message_where_the_runs_part(tmp_path: Path) -> None:
    """Two real runs that differ only in the mock's fee: the first fill's fee is where they part."""
    data = tmp_path / "ETH-BTC-1m.csv"
    slice_rows(ROOT / "data" / "ETH-BTC-1m.csv", data, rows=600)
    catalog = load_catalog(None)
    ours = asyncio.run(run_backtest(catalog, [("ETH-BTC", data)]))
    theirs = asyncio.run(
        run_backtest(catalog, [("ETH-BTC", data)], options=Options(fee_rate=Decimal("0.001")))
    )
    parity = Parity(
        backtest=fingerprint(ours.journal),
        replay=fingerprint(theirs.journal),
        differences=differences(theirs.journal, ours.journal),
        replay_seconds=1.0,
        run=ours,
    )
    console = Console(record=True, width=200)
    assert print_parity(parity, console) == 1
    text = console.export_text()
    assert "parity broken" in text
    assert "order eth-btc-momentum #2" in text and "fills" in text  # the first filled event
    same = Parity(parity.backtest, parity.backtest, [], 1.0, ours)
    assert print_parity(same, console) == 0
