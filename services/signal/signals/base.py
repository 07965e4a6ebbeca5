"""The one small interface every signal implements, and the registry that names them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from services.signal.candles import Candle

ONE = Decimal(1)


@dataclass(frozen=True)
class Score:
    value: Decimal
    """-1 strong sell .. +1 strong buy."""
    confidence: Decimal
    """0 .. 1: how much of its evidence the signal has (warming up lowers it)."""

    def __post_init__(self) -> None:
        if not (-ONE <= self.value <= ONE and 0 <= self.confidence <= ONE):
            raise ValueError(f"score out of range: {self}")


class Signal(Protocol):
    name: str

    def update(self, candle: Candle) -> Score | None:
        """Feed one closed candle; ``None`` while it has too few candles to say anything."""
        ...


REGISTRY: dict[str, Callable[..., Signal]] = {}


def register(name: str) -> Callable[[Callable[..., Signal]], Callable[..., Signal]]:
    def add(factory: Callable[..., Signal]) -> Callable[..., Signal]:
        if name in REGISTRY:
            raise ValueError(f"a signal named {name!r} is already registered")
        REGISTRY[name] = factory
        return factory

    return add


def create(name: str, params: dict[str, Any]) -> Signal:
    """A signal by its registered name; unknown names and parameters are clear errors."""
    if name not in REGISTRY:
        raise ValueError(f"unknown signal {name!r}; known: {', '.join(sorted(REGISTRY))}")
    try:
        return REGISTRY[name](**params)
    except TypeError as error:
        raise ValueError(f"signal {name!r}: {error}") from None


def clamp(value: Decimal) -> Decimal:
    return max(-ONE, min(ONE, value))
