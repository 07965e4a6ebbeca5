"""A bot's signals blended into one score, a direction and a temperature (pure).

score = Σ(weight × value × confidence) / Σ weight over the signals that have spoken;
agreement = the share of that weight whose sign matches the score's;
temperature = 100 × |score| × (0.5 + 0.5 × agreement) × readiness, where readiness is the share
of all weight that has spoken (a bot still warming up runs cold). One signal that is sure and
alone gives 100 × |value|; two that disagree cool the result down.
direction: buy at score ≥ buy_threshold, sell at score ≤ -sell_threshold, else hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from services.signal.candles import Candle
from services.signal.signals import Score, Signal

ONE_DECIMAL = Decimal("0.1")
ZERO = Decimal(0)
HALF = Decimal("0.5")
HUNDRED = Decimal(100)


@dataclass(frozen=True)
class Weighted:
    signal: Signal
    weight: Decimal


@dataclass(frozen=True)
class Evaluation:
    direction: Literal["buy", "sell", "hold"]
    score: Decimal
    agreement: Decimal
    temperature: Decimal
    scores: dict[str, Score | None]


class Blend:
    def __init__(self, signals: list[Weighted], buy_threshold: Decimal, sell_threshold: Decimal):
        if not signals or any(w.weight <= 0 for w in signals):
            raise ValueError("a bot needs at least one signal, each with a positive weight")
        if not (0 < buy_threshold <= 1 and 0 < sell_threshold <= 1):
            raise ValueError("thresholds are scores between 0 (exclusive) and 1")
        self.signals = signals
        self.buy_threshold, self.sell_threshold = buy_threshold, sell_threshold

    def update(self, candle: Candle) -> Evaluation:
        # One pass over the signals, summing in their order (the same Decimal operations, in the
        # same order, as the formula above): the strategy runs on every candle of a backtest.
        scores: dict[str, Score | None] = {}
        spoken: list[tuple[Decimal, Score]] = []
        spoken_weight = total = weighted = ZERO
        for w in self.signals:
            said = scores[w.signal.name] = w.signal.update(candle)
            total += w.weight
            if said is not None:
                spoken.append((w.weight, said))
                spoken_weight += w.weight
                weighted += w.weight * said.value * said.confidence
        if not spoken_weight:
            return Evaluation("hold", ZERO, ZERO, ZERO, scores)
        score = weighted / spoken_weight
        agreement = ZERO
        if score:
            up = score > 0
            agreeing = ZERO
            for weight, said in spoken:
                if said.value and (said.value > 0) == up:
                    agreeing += weight
            agreement = agreeing / spoken_weight
        readiness = spoken_weight / total
        temperature = 100 * abs(score) * (HALF + agreement / 2) * readiness
        temperature = min(HUNDRED, temperature).quantize(ONE_DECIMAL)
        direction: Literal["buy", "sell", "hold"]
        if score >= self.buy_threshold:
            direction = "buy"
        elif score <= -self.sell_threshold:
            direction = "sell"
        else:
            direction = "hold"
        return Evaluation(direction, score, agreement, temperature, scores)
