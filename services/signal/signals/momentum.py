"""Momentum: the close's change over the last ``lookback`` candles.

Score: the change in percent divided by ``full_pct`` (the move that counts as full strength).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from services.signal.candles import Candle
from services.signal.signals.base import ONE, Score, clamp, register


@register("momentum")
@dataclass
class MomentumSignal:
    lookback: int = 10
    full_pct: Decimal = Decimal(1)
    name: str = "momentum"
    _closes: deque[Decimal] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.lookback < 1:
            raise ValueError("momentum needs lookback >= 1")
        self.full_pct = Decimal(self.full_pct)

    def update(self, candle: Candle) -> Score | None:
        self._closes.append(candle.close)
        if len(self._closes) > self.lookback + 1:
            self._closes.popleft()
        if len(self._closes) <= self.lookback:
            return None
        change_pct = (self._closes[-1] - self._closes[0]) / self._closes[0] * 100
        return Score(clamp(change_pct / self.full_pct), ONE)
