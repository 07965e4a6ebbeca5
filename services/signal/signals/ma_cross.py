"""Moving-average crossover: fast above slow is a buy, below a sell.

Score: the gap between the averages as a share of the slow one, divided by ``full_gap_pct``
(the gap, in percent, that counts as a full-strength signal), clamped to -1..+1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from services.signal.candles import Candle
from services.signal.signals.averages import Ema, Sma, average
from services.signal.signals.base import ONE, Score, clamp, register


@register("ma_cross")
@dataclass
class MaCross:
    fast: int = 9
    slow: int = 21
    kind: str = "ema"
    full_gap_pct: Decimal = Decimal("0.5")
    name: str = "ma_cross"
    _fast: Sma | Ema = field(init=False)
    _slow: Sma | Ema = field(init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.fast < self.slow:
            raise ValueError("ma_cross needs 1 <= fast < slow")
        self.full_gap_pct = Decimal(self.full_gap_pct)
        self._fast, self._slow = average(self.kind, self.fast), average(self.kind, self.slow)

    def update(self, candle: Candle) -> Score | None:
        fast, slow = self._fast.add(candle.close), self._slow.add(candle.close)
        if fast is None or slow is None:
            return None
        gap_pct = (fast - slow) / slow * 100
        return Score(clamp(gap_pct / self.full_gap_pct), ONE)
