"""Momentum readings and the replay of the bundled real market data."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import pytest

from services.signal.feeds.random_walk import parse_walk_spec, random_walk
from services.signal.feeds.replay import ReplayError, parse_replay_spec, read_ticks, replay
from shared.contracts import Ticker

DATA = Path(__file__).resolve().parents[3] / "data"
T0 = datetime(2018, 1, 20, tzinfo=UTC)


def test_a_random_walk_is_the_same_for_the_same_seed() -> None:
    def first(seed: int) -> list[Ticker]:
        walk = random_walk("BTC-USD", Decimal(50000), T0, seed=seed)
        return [next(walk) for _ in range(200)]

    assert first(7) == first(7) and first(7) != first(8)
    ticks = first(7)
    assert all(t.price > 0 and t.price == t.price.quantize(Decimal("0.01")) for t in ticks)
    assert [t.time for t in ticks[:2]] == [T0, T0 + timedelta(seconds=1)]


def test_a_bad_random_walk_spec_says_which_item() -> None:
    assert parse_walk_spec("BTC-USD=50000, ETH-USD=3000.5") == [
        ("BTC-USD", Decimal(50000)),
        ("ETH-USD", Decimal("3000.5")),
    ]
    with pytest.raises(ValueError, match="'BTC-USD=zero'"):
        parse_walk_spec("BTC-USD=zero")


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


def test_the_barrier_runs_after_each_tick_before_the_next_and_can_stop_the_replay() -> None:
    ticks = list(read_ticks(DATA / "ETH-BTC-1m.csv", "ETH-BTC"))[:5]
    log: list[str] = []

    async def publish(tick: Ticker) -> None:
        log.append(f"publish {tick.price}")

    async def barrier(tick: Ticker) -> None:
        log.append(f"settled {tick.price}")
        if tick == ticks[2]:
            raise RuntimeError("intent x did not settle")

    with pytest.raises(RuntimeError, match="did not settle"):
        asyncio.run(replay(iter(ticks), publish, speed=0, after_publish=barrier))
    prices = [str(t.price) for t in ticks[:3]]
    assert log == [f"{what} {p}" for p in prices for what in ("publish", "settled")]
