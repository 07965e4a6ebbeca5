"""Replay of recorded market data from CSV: 1-minute candles or a public trade tape.

A candle becomes one ticker at its close price, stamped with its close time (open time + 1 min),
so nothing sees a price before it existed. A trade becomes one ticker at its price and time.
``speed`` is event seconds per wall second (60 = one candle a second); 0 replays as fast as
possible, which tests and backtests use.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

from shared.contracts import Ticker

CANDLE = timedelta(minutes=1)


class ReplayError(Exception):
    pass


def read_ticks(path: Path, product_id: str) -> Iterator[Ticker]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        if {"time", "close"} <= columns:
            for row in reader:
                yield Ticker(
                    product_id=product_id,
                    price=row["close"],
                    time=datetime.fromisoformat(row["time"]) + CANDLE,
                    source="replay",
                )
        elif {"time", "price"} <= columns:
            for row in reader:
                yield Ticker(
                    product_id=product_id,
                    price=row["price"],
                    time=datetime.fromisoformat(row["time"]),
                    source="replay",
                )
        else:
            raise ReplayError(
                f"{path}: expected candle (time, close) or trade (time, price) columns"
            )


def parse_replay_spec(spec: str) -> list[tuple[str, Path]]:
    """``"ETH-BTC=data/ETH-BTC-1m.csv,XRP-ETH=data/XRP-ETH-trades.csv"`` -> pairs."""
    pairs = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        product, sep, file = item.partition("=")
        if not sep or not product or not file:
            raise ReplayError(f"TRANCHE_REPLAY: {item!r} is not PRODUCT=path.csv")
        path = Path(file)
        if not path.is_file():
            raise ReplayError(f"TRANCHE_REPLAY: {path} does not exist")
        pairs.append((product, path))
    return pairs


async def replay(
    ticks: Iterator[Ticker],
    publish: Callable[[Ticker], Awaitable[None]],
    speed: float,
    max_pause_s: float = 5.0,
    after_publish: Callable[[Ticker], Awaitable[None]] | None = None,
) -> int:
    """Publish every tick, pacing by event time; returns how many were published.

    ``after_publish`` runs after each tick before the next is published (the lock-step barrier
    of :mod:`services.signal.lockstep`); whatever it raises stops the replay."""
    previous: datetime | None = None
    count = 0
    for tick in ticks:
        if previous is not None:
            gap = (tick.time - previous).total_seconds()
            pause = min(gap / speed, max_pause_s) if speed > 0 else 0
            await asyncio.sleep(max(pause, 0))
        await publish(tick)
        if after_publish is not None:
            await after_publish(tick)
        previous = tick.time
        count += 1
    return count


class BackInTime(ReplayError):
    """A replay whose ticks all precede the last tick already published for the product."""


def resume_after(ticks: Iterator[Ticker], last: datetime | None, path: Path) -> Iterator[Ticker]:
    """The ticks after ``last`` (the last tick published for the product before a restart), so
    event time never goes backwards; :class:`BackInTime` when the file has none."""
    if last is None:
        yield from ticks
        return
    resumed = False
    for tick in ticks:
        if tick.time > last:
            resumed = True
            yield tick
    if not resumed:
        raise BackInTime(
            f"{path.name} has no tick after {last:%Y-%m-%d %H:%M:%S}Z, the last one published "
            f"for this product: event time never goes backwards, so it is not replayed (start "
            "with a new data directory to replay it from its beginning)"
        )
