"""A bot created with ``tranche bots`` while the four services run trades through all of them:
signal evaluates it, safety approves, the executor fills, the ledger books and reports it."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e.conftest import position_of, ticker, wait_for
from tranche.stack import EmbeddedStack

pytestmark = pytest.mark.e2e

NEW_BOT = """
[bots.rt-bot]
product_id = "ETH-BTC"
quote_size = "0.02"
confirm_evaluations = 1
confirm_seconds = 0
"""


def tranche(stack: EmbeddedStack, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tranche", *argv],
        capture_output=True, text=True, timeout=30, check=False,
        env={"PATH": "", "TRANCHE_SIGNAL_URL": stack.config.url("signal"),
             "TRANCHE_CONTROL_TOKEN": stack.config.control_token},
    )  # fmt: skip


def test_a_bot_created_with_the_cli_trades_through_every_service(
    stack: EmbeddedStack, tmp_path: Path
) -> None:
    url = stack.config.admin_url
    new = tmp_path / "rt.toml"
    new.write_text(NEW_BOT)
    created = tranche(stack, "bots", "create", str(new))
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("rt-bot") and " active " in created.stdout

    ticker(url, "0.08")
    signal = tranche(stack, "signal", "rt-bot", "buy", "--nats-url", url)
    assert signal.returncode == 0, signal.stderr
    position = wait_for(position_of(stack, "rt-bot"), what="a position for the new bot")
    # 0.02 BTC at 0.08 buys 0.25 ETH: the ledger sized nothing, the executor used the product.
    assert Decimal(position["quantity"]) == Decimal("0.25")

    refused = tranche(stack, "bots", "remove", "rt-bot")
    assert refused.returncode == 1
    assert refused.stderr.startswith("POSITION_OPEN: bot rt-bot holds 0.25 ETH-BTC")
    paused = tranche(stack, "bots", "pause", "rt-bot")
    assert paused.returncode == 0 and " paused " in paused.stdout
    listed = tranche(stack, "bots", "list")
    assert "rt-bot" in listed.stdout and "position open" in listed.stdout
