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
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["candles"] == 600 and result["fingerprint"] in done.stdout
    assert [bot["bot_id"] for bot in result["bots"]] == ["eth-btc-momentum"]
    assert result["start"] == "2018-01-20T04:54:00+00:00"  # the first candle's close
    assert Decimal(result["fills"][0]["price"]) > 0


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
