"""Relative strength index with Wilder's smoothing (the classic 14-period RSI).

Score: oversold (RSI at or below ``oversold``) is a buy growing to +1 at RSI 0; overbought (at or
above ``overbought``) a sell growing to -1 at RSI 100; between them the score is 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from itertools import pairwise

from services.signal.candles import Candle
from services.signal.signals.base import ONE, Score, clamp, register

ZERO, FIFTY, HUNDRED = Decimal(0), Decimal(50), Decimal(100)


def wilder(previous: Decimal, value: Decimal, period: int) -> Decimal:
    return (previous * (period - 1) + value) / period


@register("rsi")
@dataclass
class Rsi:
    period: int = 14
    oversold: Decimal = Decimal(30)
    overbought: Decimal = Decimal(70)
    name: str = "rsi"
    _closes: list[Decimal] = field(default_factory=list)
    _gain: Decimal | None = None
    _loss: Decimal | None = None
    last: Decimal | None = None
    """The latest RSI, 0..100."""

    def __post_init__(self) -> None:
        self.oversold, self.overbought = Decimal(self.oversold), Decimal(self.overbought)
        if self.period < 2 or not 0 < self.oversold < self.overbought < 100:
            raise ValueError("rsi needs period >= 2 and 0 < oversold < overbought < 100")

    def update(self, candle: Candle) -> Score | None:
        closes = self._closes
        closes.append(candle.close)
        if len(closes) < 2:
            return None
        change = closes[-1] - closes[-2]
        if self._gain is None or self._loss is None:
            if len(closes) <= self.period:
                return None
            changes = [b - a for a, b in pairwise(closes)]
            self._gain = sum((max(c, ZERO) for c in changes), ZERO) / self.period
            self._loss = sum((max(-c, ZERO) for c in changes), ZERO) / self.period
        else:
            self._gain = wilder(self._gain, max(change, ZERO), self.period)
            self._loss = wilder(self._loss, max(-change, ZERO), self.period)
        del closes[:-1]  # only the last close is needed from here on
        if self._loss == 0:
            rsi = HUNDRED if self._gain > 0 else FIFTY
        else:
            rsi = 100 - 100 / (1 + self._gain / self._loss)
        self.last = rsi
        if rsi <= self.oversold:
            value = (self.oversold - rsi) / self.oversold
        elif rsi >= self.overbought:
            value = -(rsi - self.overbought) / (100 - self.overbought)
        else:
            return Score(ZERO, ONE)
        return Score(clamp(value if value else ZERO), ONE)
