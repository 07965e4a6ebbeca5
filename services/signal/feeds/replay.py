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

from pydantic import ValidationError

from shared.contracts import Ticker
from shared.eventtime import MOCK_BOUNDS, TimeBounds, refuse_time
from shared.money import utc_now

CANDLE = timedelta(minutes=1)


class ReplayError(Exception):
    pass


def read_ticks(
    path: Path, product_id: str, bounds: TimeBounds = MOCK_BOUNDS, now: datetime | None = None
) -> Iterator[Ticker]:
    """The file's ticks in order. A row the services could not accept (a time that is not ISO
    8601 or far ahead of the row before it or of the clock, a price that is not a positive
    decimal) raises :class:`ReplayError` naming the file, the row (the header is row 1) and
    every bad field: the replay stops there instead of feeding the services junk."""
    now = now or utc_now()
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        if {"time", "close"} <= columns:
            price_column, offset = "close", CANDLE
        elif {"time", "price"} <= columns:
            price_column, offset = "price", timedelta(0)
        else:
            raise ReplayError(
                f"{path}: expected candle (time, close) or trade (time, price) columns"
            )
        newest: datetime | None = None
        for number, row in enumerate(reader, start=2):
            tick = _tick(row, product_id, price_column, offset, newest, now, bounds)
            if isinstance(tick, list):
                raise ReplayError(f"{path.name}, row {number}: " + "; ".join(tick))
            newest = tick.time if newest is None else max(newest, tick.time)
            yield tick


def _tick(
    row: dict[str, str],
    product_id: str,
    price_column: str,
    offset: timedelta,
    newest: datetime | None,
    now: datetime,
    bounds: TimeBounds,
) -> Ticker | list[str]:
    """One row as a ticker, or the problems with it (one per field)."""
    problems = []
    text = row.get("time") or ""
    time: datetime | None = None
    try:
        time = datetime.fromisoformat(text)
    except ValueError:
        problems.append(f"field time: {text[:40]!r} is not an ISO 8601 time")
    if time is not None and time.year < datetime.max.year:
        time += offset
    try:
        tick = Ticker(
            product_id=product_id, price=row.get(price_column) or "", time=time, source="replay"
        )
    except ValidationError as error:
        for item in error.errors():
            field = price_column if item["loc"][0] == "price" else str(item["loc"][0])
            if time is None and field == "time":
                continue  # said above
            problems.append(f"field {field}: {item['msg']} (got {str(item['input'])[:40]!r})")
        return problems
    if problems:
        return problems
    reason = refuse_time(tick.time, newest, now, bounds, "the row's time")
    if reason is not None:
        return [f"field time: {reason.message}"]
    return tick


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
