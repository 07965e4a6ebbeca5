"""Momentum readings and the replay of the bundled real market data."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import pytest

from services.signal.feeds.replay import ReplayError, parse_replay_spec, read_ticks, replay
from services.signal.momentum import Momentum
from shared.contracts import Ticker

DATA = Path(__file__).resolve().parents[3] / "data"


def test_momentum_needs_its_lookback_before_it_speaks() -> None:
    momentum = Momentum(lookback=3, threshold_pct=Decimal(1))
    assert momentum.update(Decimal(100)) is None
    assert momentum.update(Decimal(100)) is None
    reading = momentum.update(Decimal(102))
    assert reading is not None and reading.direction == "buy"
    assert reading.change_pct == Decimal(2) and reading.temperature == Decimal(100)


def test_momentum_below_threshold_holds() -> None:
    momentum = Momentum(lookback=2, threshold_pct=Decimal(1))
    momentum.update(Decimal(100))
    reading = momentum.update(Decimal("99.5"))
    assert reading is not None and reading.direction is None
    assert reading.temperature == Decimal(25)


def test_candles_replay_at_their_close_time() -> None:
    ticks = list(read_ticks(DATA / "ETH-BTC-1m.csv", "ETH-BTC"))
    assert len(ticks) == 14397
    first = ticks[0]
    assert first.price == Decimal("0.08909374")  # the first candle's close
    assert first.time == datetime(2018, 1, 20, 4, 54, tzinfo=UTC)  # open 04:53 + 1 minute
    assert all(a.time <= b.time for a, b in pairwise(ticks))


def test_trades_replay_at_their_own_time() -> None:
    ticks = list(read_ticks(DATA / "XRP-ETH-trades.csv", "XRP-ETH"))
    assert len(ticks) == 12477
    assert ticks[0].price == Decimal("0.00141342")


def test_a_bad_replay_spec_says_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match=r"PRODUCT=path\.csv"):
        parse_replay_spec("ETH-BTC")
    with pytest.raises(ReplayError, match="does not exist"):
        parse_replay_spec(f"ETH-BTC={tmp_path / 'missing.csv'}")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ReplayError, match="columns"):
        list(read_ticks(bad, "ETH-BTC"))


def test_replay_as_fast_as_possible_publishes_every_tick_in_order() -> None:
    seen: list[Ticker] = []

    async def publish(tick: Ticker) -> None:
        seen.append(tick)

    ticks = list(read_ticks(DATA / "ETH-BTC-1m.csv", "ETH-BTC"))[:500]
    count = asyncio.run(replay(iter(ticks), publish, speed=0))
    assert count == 500 and seen == ticks
