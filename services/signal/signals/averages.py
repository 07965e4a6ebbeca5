"""Moving averages shared by the signals that need them (pure, incremental)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass
class Sma:
    period: int
    _window: deque[Decimal] = field(default_factory=deque)
    _sum: Decimal = Decimal(0)

    def add(self, value: Decimal) -> Decimal | None:
        self._window.append(value)
        self._sum += value
        if len(self._window) > self.period:
            self._sum -= self._window.popleft()
        return self._sum / self.period if len(self._window) == self.period else None


@dataclass
class Ema:
    """Exponential moving average seeded with the SMA of its first ``period`` values."""

    period: int
    _seed: Sma | None = None
    value: Decimal | None = None

    def add(self, value: Decimal) -> Decimal | None:
        if self.value is None:
            if self._seed is None:
                self._seed = Sma(self.period)
            self.value = self._seed.add(value)
            return self.value
        alpha = Decimal(2) / (self.period + 1)
        self.value = self.value + alpha * (value - self.value)
        return self.value


def average(kind: str, period: int) -> Sma | Ema:
    if kind == "sma":
        return Sma(period)
    if kind == "ema":
        return Ema(period)
    raise ValueError(f"average must be 'sma' or 'ema', not {kind!r}")
