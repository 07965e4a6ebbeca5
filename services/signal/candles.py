"""Candles from ticks (pure): OHLC per bucket of event time, closed when a later bucket starts.

A bucket is ``[start, start + interval)`` aligned to the epoch, so the same ticks always make the
same candles. A candle is only handed out once a tick of a later bucket proves it complete.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Candle:
    start: datetime
    interval: timedelta
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    ticks: int

    @property
    def end(self) -> datetime:
        return self.start + self.interval


class CandleBuilder:
    def __init__(self, interval: timedelta):
        if interval <= timedelta(0):
            raise ValueError("a candle interval must be positive")
        self.interval = interval
        self._open: Candle | None = None

    def bucket(self, time: datetime) -> datetime:
        return EPOCH + ((time - EPOCH) // self.interval) * self.interval

    def add(self, price: Decimal, time: datetime) -> Candle | None:
        """Feed one tick; returns the candle it closed, if any. Ticks older than the open
        candle are ignored (the market's past cannot change)."""
        start = self.bucket(time)
        current = self._open
        if current is None or start > current.start:
            self._open = Candle(start, self.interval, price, price, price, price, 1)
            return current
        if start < current.start:
            return None
        self._open = replace(
            current,
            high=max(current.high, price),
            low=min(current.low, price),
            close=price,
            ticks=current.ticks + 1,
        )
        return None
