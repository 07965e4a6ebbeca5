"""Relative strength index with Wilder's smoothing (the classic 14-period RSI).

Score: oversold (RSI at or below ``oversold``) is a buy growing to +1 at RSI 0; overbought (at or
above ``overbought``) a sell growing to -1 at RSI 100; between them the score is 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from services.signal.candles import Candle
from services.signal.signals.base import ONE, Score, clamp, register


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
        self._closes.append(candle.close)
        if len(self._closes) < 2:
            return None
        change = self._closes[-1] - self._closes[-2]
        gain, loss = max(change, Decimal(0)), max(-change, Decimal(0))
        if self._gain is None or self._loss is None:
            if len(self._closes) <= self.period:
                return None
            changes = [b - a for a, b in zip(self._closes, self._closes[1:], strict=False)]
            self._gain = sum((max(c, Decimal(0)) for c in changes), Decimal(0)) / self.period
            self._loss = sum((max(-c, Decimal(0)) for c in changes), Decimal(0)) / self.period
            self._closes = self._closes[-1:]
        else:
            self._gain = wilder(self._gain, gain, self.period)
            self._loss = wilder(self._loss, loss, self.period)
            self._closes = self._closes[-1:]
        if self._loss == 0:
            rsi = Decimal(100) if self._gain > 0 else Decimal(50)
        else:
            rsi = 100 - 100 / (1 + self._gain / self._loss)
        self.last = rsi
        if rsi <= self.oversold:
            value = (self.oversold - rsi) / self.oversold
        elif rsi >= self.overbought:
            value = -(rsi - self.overbought) / (100 - self.overbought)
        else:
            value = Decimal(0)
        return Score(clamp(value if value else Decimal(0)), ONE)
