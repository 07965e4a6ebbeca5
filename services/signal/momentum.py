"""Momentum over the last N ticks (pure): the skeleton's one strategy until the full set lands.

Score = price change over the lookback as a percentage; beyond ``threshold_pct`` it is a signal,
and its temperature grows with how far beyond the threshold it went (threshold = 50, twice = 100).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from shared.contracts import Side


@dataclass(frozen=True)
class Reading:
    direction: Side | None
    change_pct: Decimal
    temperature: Decimal


@dataclass
class Momentum:
    lookback: int
    threshold_pct: Decimal
    prices: deque[Decimal] = field(default_factory=deque)

    def update(self, price: Decimal) -> Reading | None:
        """Feed one price; ``None`` until ``lookback`` prices have been seen."""
        self.prices.append(price)
        if len(self.prices) > self.lookback:
            self.prices.popleft()
        if len(self.prices) < self.lookback:
            return None
        first = self.prices[0]
        change_pct = (price - first) / first * 100
        strength = abs(change_pct) / self.threshold_pct if self.threshold_pct else Decimal(0)
        temperature = min(Decimal(100), (strength * 50).quantize(Decimal("0.1")))
        direction: Side | None = None
        if change_pct >= self.threshold_pct:
            direction = "buy"
        elif change_pct <= -self.threshold_pct:
            direction = "sell"
        return Reading(direction, change_pct.quantize(Decimal("0.0001")), temperature)
