"""Issue 21: the backtest decides exactly what the services decide. The same real data through
``tranche backtest`` (the services' handlers in one process) and through ``tranche replay`` (the
running services, lock step) gives the same journal: every intent, decision, order event,
position and safety event, message for message, so the same fingerprint. On a difference the
test prints where the two runs part."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.catalog import load_catalog
from tranche.backtest.parity import compare_with_replay
from tranche.replay import slice_rows
from tranche.stack import ROOT

pytestmark = pytest.mark.e2e

BOT = "eth-btc-momentum"
DATA = ROOT / "data" / "ETH-BTC-1m.csv"


def assert_parity(parity) -> None:
    assert parity.differences == [], "the backtest and the replay part:\n" + "\n".join(
        parity.differences
    )
    assert parity.backtest == parity.replay
    journal = parity.run.journal
    assert {
        f"{kind} {BOT}" for kind in ("intent", "approved", "rejected", "order", "position")
    } <= (set(journal))  # the runs did something worth comparing


def test_the_2000_candle_slice_backtests_as_it_replays(tmp_path: Path) -> None:
    """The slice of the replay determinism test and of the README's replay example."""
    data = tmp_path / "ETH-BTC-1m.csv"
    assert slice_rows(DATA, data, rows=2000) == 2000
    parity = compare_with_replay(load_catalog(None), None, data, "ETH-BTC", tmp_path / "work")
    assert_parity(parity)
    assert parity.run.result.candles == 2000 and parity.run.evaluations == 1999
    assert len(parity.run.result.round_trips) >= 2


def test_a_later_longer_period_backtests_as_it_replays(tmp_path: Path) -> None:
    """60 hours of other market (3,600 candles), sliced by --start/--end on both sides."""
    start, end = datetime(2018, 1, 26, tzinfo=UTC), datetime(2018, 1, 28, 12, tzinfo=UTC)
    parity = compare_with_replay(
        load_catalog(None), None, DATA, "ETH-BTC", tmp_path / "work", start=start, end=end
    )
    assert_parity(parity)
    assert parity.run.result.candles == 3600


def test_the_command_compares_with_the_replay(tmp_path: Path) -> None:
    data = tmp_path / "ETH-BTC-1m.csv"
    slice_rows(DATA, data, rows=600)
    done = subprocess.run(
        [sys.executable, "-m", "tranche", "backtest", str(data), "--compare-replay",
         "--json", str(tmp_path / "result.json")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "parity: the backtest and the replay" in done.stdout
    assert (tmp_path / "result.json").is_file()


def test_the_trade_tape_of_another_product_backtests_as_it_replays(tmp_path: Path) -> None:
    """The second bundled file: XRP-ETH public trades, not candles; its bot builds 5-minute
    candles from them, so ticks are trades and evaluations are candle closes."""
    data = tmp_path / "XRP-ETH-trades.csv"
    assert slice_rows(ROOT / "data" / "XRP-ETH-trades.csv", data, rows=4000) == 4000
    parity = compare_with_replay(
        load_catalog(None), None, data, "XRP-ETH", tmp_path / "work", bots=["xrp-eth-momentum"]
    )
    assert parity.differences == [], "the backtest and the replay part:\n" + "\n".join(
        parity.differences
    )
    assert parity.backtest == parity.replay
    journal = parity.run.journal
    assert {"intent xrp-eth-momentum", "order xrp-eth-momentum"} <= set(journal)


def with_stops_on_exchange(to: Path) -> Path:
    """The sample bots' file with eth-btc-momentum keeping its stop-loss on the exchange."""
    text = (ROOT / "config" / "tranche.toml").read_text()
    first = 'stop_loss_pct = "2.5"'
    assert first in text
    to.write_text(text.replace(first, first + "\nstop_on_exchange = true", 1))
    return to


def stop_orders(parity) -> list[str]:
    """The statuses of the bot's stops' order events, in order."""
    journal = parity.run.journal
    stops = {b["intent_id"] for b in journal[f"intent {BOT}"] if b["order_type"] == "stop_limit"}
    return [b["status"] for b in journal[f"order {BOT}"] if b["intent_id"] in stops]


def test_a_bot_with_its_stop_on_the_exchange_backtests_as_it_replays(tmp_path: Path) -> None:
    """The signal sizes its stops by the product's rules, hears their order events (its own
    stop-loss stands down while the exchange holds one) and safety's refusals: the backtest does
    as the services do, so a bot with ``stop_on_exchange`` decides the same in both. On the
    2,000-candle slice its stops rest, are replaced as the position grows, and are cancelled
    before its take-profit sells."""
    config = with_stops_on_exchange(tmp_path / "tranche.toml")
    catalog = load_catalog(config)
    data = tmp_path / "ETH-BTC-1m.csv"
    assert slice_rows(DATA, data, rows=2000) == 2000
    parity = compare_with_replay(catalog, config, data, "ETH-BTC", tmp_path / "work", bots=[BOT])
    assert_parity(parity)
    assert {"open", "cancelled"} <= set(stop_orders(parity))
    assert [trip.exit_reason for trip in parity.run.result.round_trips] == ["TAKE_PROFIT"] * 2
