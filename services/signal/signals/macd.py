"""MACD (12/26/9 by default): the MACD line above its signal line is a buy, below a sell.

Score: the histogram (MACD - signal) as a percentage of price, divided by ``full_pct``, clamped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from services.signal.candles import Candle
from services.signal.signals.averages import Ema
from services.signal.signals.base import ONE, Score, clamp, register


@register("macd")
@dataclass
class Macd:
    fast: int = 12
    slow: int = 26
    signal: int = 9
    full_pct: Decimal = Decimal("0.1")
    name: str = "macd"
    _fast: Ema = field(init=False)
    _slow: Ema = field(init=False)
    _signal: Ema = field(init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.fast < self.slow or self.signal < 1:
            raise ValueError("macd needs 1 <= fast < slow and signal >= 1")
        self.full_pct = Decimal(self.full_pct)
        self._fast, self._slow, self._signal = Ema(self.fast), Ema(self.slow), Ema(self.signal)

    def update(self, candle: Candle) -> Score | None:
        fast, slow = self._fast.add(candle.close), self._slow.add(candle.close)
        if fast is None or slow is None:
            return None
        line = fast - slow
        signal = self._signal.add(line)
        if signal is None:
            return None
        histogram_pct = (line - signal) / candle.close * 100
        return Score(clamp(histogram_pct / self.full_pct), ONE)
