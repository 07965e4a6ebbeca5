"""The backtest engine on hand-made ticks: what the services' handlers decide, wired in one
process (an entry, adds refused by the entry cooldown then approved, a stop-loss), files merged
in market-time order, ``--start``/``--end``, and a stop on the exchange that sells while the
signal's own stop-loss stands down."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from shared.catalog import Catalog, load_catalog
from tranche.backtest.engine import (
    BacktestError,
    Options,
    Run,
    bots_for,
    file_ticks,
    merged,
    run_backtest,
)
from tranche.journal import fingerprint

T0 = datetime(2018, 1, 20, tzinfo=UTC)
BOTS = """
[products.ETH-BTC]
base_min_size = "0.001"
base_increment = "0.00000001"
quote_increment = "0.00000001"
quote_min_size = "0.0001"

[products.XRP-ETH]
base_min_size = "1"
base_increment = "0.000001"
quote_increment = "0.00000001"
quote_min_size = "0.001"

[bots.up]
product_id = "ETH-BTC"
quote_size = "0.01"
confirm_evaluations = 1
confirm_seconds = 0
stop_loss_pct = "2"
signals = [{ name = "momentum", params = { lookback = 1, full_pct = "0.1" } }]

[bots.xrp]
product_id = "XRP-ETH"
quote_size = "0.5"
signals = [{ name = "momentum", params = { lookback = 1, full_pct = "0.1" } }]
"""


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    path = tmp_path / "bots.toml"
    path.write_text(BOTS)
    return load_catalog(path)


def candles(path: Path, prices: list[Decimal], start: datetime = T0) -> Path:
    rows = ["time,open,high,low,close,volume"]
    for n, price in enumerate(prices):
        at = (start + timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append(f"{at},{price},{price},{price},{price},1")
    path.write_text("\n".join(rows) + "\n")
    return path


def rising_then_falling() -> list[Decimal]:
    """Flat, eleven minutes up 0.1 % a minute (buy every candle), then 6 % down (the stop)."""
    flat = [Decimal("0.1")] * 3
    step = Decimal("0.001")
    up = [(Decimal("0.1") * (1 + step * k)).quantize(Decimal("1e-8")) for k in range(1, 12)]
    return flat + up + [Decimal("0.095")] * 3


def backtest(catalog: Catalog, files: list[tuple[str, Path]], **kwargs) -> Run:
    return asyncio.run(run_backtest(catalog, files, **kwargs))


def test_an_entry_adds_refused_by_the_cooldown_an_add_and_a_stop(
    catalog: Catalog, tmp_path: Path
) -> None:
    data = candles(tmp_path / "ETH-BTC.csv", rising_then_falling())
    run = backtest(catalog, [("ETH-BTC", data)], bot_ids=["up"])
    journal = run.journal

    def at(minute: int) -> str:
        return f"2018-01-20T00:{minute:02d}:00Z"

    approved = [(m["intent"]["action"], m["time"]) for m in journal["approved up"]]
    assert approved == [("entry", at(5)), ("add", at(10)), ("exit", at(15))]
    # Every add within five minutes (the entry cooldown) of the last entry was refused for it.
    refused = {m["time"]: [r["code"] for r in m["reasons"]] for m in journal["rejected up"]}
    for minute in (6, 7, 8, 9, 11, 12, 13, 14):
        assert refused[at(minute)] == ["ENTRY_COOLDOWN"], minute
    # The exit is the stop-loss, of the whole position, and leaves the bot flat.
    (exit_,) = [m for m in journal["intent up"] if m["action"] == "exit"]
    assert exit_["reason"]["code"] == "STOP_LOSS"
    positions = journal["position up"]
    assert [p["status"] for p in positions] == ["open", "open", "flat"]
    assert exit_["base_size"] == positions[1]["quantity"]
    # The mock filled every order at its intent's price and market time.
    intents = {m["intent_id"]: m for m in journal["intent up"]}
    for event in journal["order up"]:
        for fill in event["fills"]:
            assert fill["price"] == intents[event["intent_id"]]["reference_price"]
            assert fill["time"] == intents[event["intent_id"]]["market_time"]

    result = run.result
    (trip,) = result.round_trips
    assert (trip.tranches, trip.exit_reason) == (2, "STOP_LOSS")
    assert trip.realized_pnl < 0 and trip.fees == sum(f.fee for f in result.fills)
    assert trip.realized_pnl == Decimal(positions[-1]["realized_pnl_total"])
    assert [f.reason for f in result.fills] == ["ENTRY", "ENTRY", "STOP_LOSS"]
    assert sum(d.approved for d in result.decisions) == 3
    assert {d.reason for d in result.decisions if not d.approved} >= {"ENTRY_COOLDOWN"}
    assert result.open_positions == [] and result.candles == len(rising_then_falling())
    assert result.fingerprint == fingerprint(journal)


def test_a_stop_on_the_exchange_sells_and_the_signals_own_stop_loss_stands_down(
    catalog: Catalog, tmp_path: Path
) -> None:
    """The backtest's signal hears its stop's order events as the services' does: the stop rests
    (``open``), so at the tick that reaches it (above its limit) the signal's own stop-loss stands
    down and the exchange's stop alone sells the position, once."""
    held = tmp_path / "held.toml"
    held.write_text(BOTS.replace("[bots.up]", "[bots.held]\nstop_on_exchange = true", 1))
    # At 00:14 (an add there is refused by the entry cooldown) down 2.1 % from the top: past the
    # stop (2 % below break-even, fees in), above its limit.
    flat_then_up = rising_then_falling()[:-4]
    down = (flat_then_up[-1] * Decimal("0.979")).quantize(Decimal("1e-8"))
    data = candles(tmp_path / "ETH-BTC.csv", [*flat_then_up, down, down, down])
    journal = backtest(load_catalog(held), [("ETH-BTC", data)], bot_ids=["held"]).journal
    exits = {(m["order_type"], m["reason"]["code"]) for m in journal["intent held"]
             if m["action"] == "exit"}  # fmt: skip
    assert exits == {("stop_limit", "STOP_ON_EXCHANGE")}  # no STOP_LOSS of the signal's own
    filled = [m for m in journal["order held"] if m["status"] == "filled"]
    assert filled[-1]["intent_id"].startswith("stop:") and filled[-1]["time"].endswith("14:00Z")
    assert journal["position held"][-1]["status"] == "flat"
    assert [m for m in journal["rejected held"] if m["intent"]["action"] == "exit"] == []


def test_the_same_data_gives_the_same_run_and_the_fee_rate_is_the_mocks(
    catalog: Catalog, tmp_path: Path
) -> None:
    data = candles(tmp_path / "ETH-BTC.csv", rising_then_falling())
    first, second = (backtest(catalog, [("ETH-BTC", data)]) for _ in range(2))
    assert first.result.fingerprint == second.result.fingerprint
    cheap = backtest(catalog, [("ETH-BTC", data)], options=Options(fee_rate=Decimal("0.001")))
    assert cheap.result.fingerprint != first.result.fingerprint
    (fill, *_) = cheap.result.fills
    assert fill.fee == (fill.price * fill.size * Decimal("0.001")).quantize(Decimal("1e-8"))


def test_several_files_are_merged_in_market_time_order(catalog: Catalog, tmp_path: Path) -> None:
    eth = candles(tmp_path / "ETH-BTC.csv", [Decimal("0.1")] * 4)
    trades = tmp_path / "XRP-ETH.csv"  # trades at 30 s past each minute, and one on the minute
    trades.write_text(
        "time,price,size\n"
        "2018-01-20T00:00:30Z,0.001,1\n2018-01-20T00:01:30Z,0.001,1\n"
        "2018-01-20T00:02:00Z,0.001,1\n2018-01-20T00:03:30Z,0.001,1\n"
    )
    ticks = list(merged([file_ticks(eth, "ETH-BTC"), file_ticks(trades, "XRP-ETH")]))
    assert [(t.time - T0, t.product_id) for t in ticks] == [
        (timedelta(seconds=30), "XRP-ETH"),
        (timedelta(seconds=60), "ETH-BTC"),  # a candle opened at 00:00 closes at 00:01
        (timedelta(seconds=90), "XRP-ETH"),
        (timedelta(seconds=120), "ETH-BTC"),  # a tie: in the order the files were given
        (timedelta(seconds=120), "XRP-ETH"),
        (timedelta(seconds=180), "ETH-BTC"),
        (timedelta(seconds=210), "XRP-ETH"),
        (timedelta(seconds=240), "ETH-BTC"),
    ]
    run = backtest(catalog, [("ETH-BTC", eth), ("XRP-ETH", trades)])
    assert [(m.at, m.product_id) for m in run.result.marks] == [
        (t.time, t.product_id) for t in ticks
    ]
    assert [b.bot_id for b in run.result.bots] == ["up", "xrp"]


def test_start_and_end_keep_the_rows_of_the_period(catalog: Catalog, tmp_path: Path) -> None:
    data = candles(tmp_path / "ETH-BTC.csv", [Decimal("0.1")] * 10)
    start, end = T0 + timedelta(minutes=3), T0 + timedelta(minutes=7)
    kept = list(file_ticks(data, "ETH-BTC", start, end))
    # Rows are sliced by their own time (a candle's open), as ``tranche replay`` slices them.
    assert [t.time - T0 for t in kept] == [timedelta(minutes=m) for m in (4, 5, 6, 7)]
    run = backtest(catalog, [("ETH-BTC", data)], start=start, end=end)
    assert run.result.candles == 4
    assert (run.result.start, run.result.end) == (start, end)
    with pytest.raises(BacktestError, match="no rows"):
        backtest(catalog, [("ETH-BTC", data)], start=T0 + timedelta(days=1))


def test_the_bots_run_are_those_of_the_files_products(catalog: Catalog) -> None:
    assert bots_for(catalog, ["ETH-BTC"], None) == ["up"]
    assert bots_for(catalog, ["ETH-BTC", "XRP-ETH"], ["xrp"]) == ["xrp"]
    with pytest.raises(BacktestError, match="no bot named nope"):
        bots_for(catalog, ["ETH-BTC"], ["nope"])
    with pytest.raises(BacktestError, match="xrp trade a product no file gives"):
        bots_for(catalog, ["ETH-BTC"], ["xrp"])


def test_a_tick_is_a_mark(catalog: Catalog, tmp_path: Path) -> None:
    data = candles(tmp_path / "ETH-BTC.csv", [Decimal("0.1"), Decimal("0.2")])
    run = backtest(catalog, [("ETH-BTC", data)])
    assert [(m.price, m.at) for m in run.result.marks] == [
        (Decimal("0.1"), T0 + timedelta(minutes=1)),
        (Decimal("0.2"), T0 + timedelta(minutes=2)),
    ]
