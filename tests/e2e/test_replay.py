"""``tranche replay``: recorded data through the real services, a result per bot."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tranche.stack import ROOT

pytestmark = pytest.mark.e2e


def test_replay_prints_what_each_bot_made_of_the_data(tmp_path: Path) -> None:
    rows = (ROOT / "data" / "ETH-BTC-1m.csv").read_text().splitlines()[:601]
    data = tmp_path / "ETH-BTC-600.csv"
    data.write_text("\n".join(rows) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "tranche", "replay", str(data), "--json", "--timeout", "240"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout)
    (bot,) = [b for b in outcome["bots"] if b["bot_id"] == "eth-btc-momentum"]
    assert bot["fills"] >= 1 and bot["approved"] >= 1
    # The ledger's numbers reconcile with the summary it reports.
    assert Decimal(outcome["summary"]["realized_pnl"]) == sum(
        Decimal(b["realized_pnl"]) for b in outcome["bots"]
    )
