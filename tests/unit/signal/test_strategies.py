"""Candles, the four signals, the blend into a temperature (pure, table-driven)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.signal.blend import Blend, Weighted
from services.signal.candles import Candle, CandleBuilder
from services.signal.signals import REGISTRY, Score, create
from services.signal.signals.averages import Ema, Sma

T0 = datetime(2018, 1, 20, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def candles(*closes: float | str) -> list[Candle]:
    return [
        Candle(
            T0 + n * MINUTE,
            MINUTE,
            Decimal(str(c)),
            Decimal(str(c)),
            Decimal(str(c)),
            Decimal(str(c)),
            1,
        )
        for n, c in enumerate(closes)
    ]


def feed(signal, closes) -> list[Score | None]:
    return [signal.update(candle) for candle in candles(*closes)]


def test_candles_close_only_when_a_later_bucket_starts() -> None:
    builder = CandleBuilder(MINUTE)
    assert builder.add(Decimal(10), T0 + timedelta(seconds=5)) is None
    assert builder.add(Decimal(12), T0 + timedelta(seconds=30)) is None
    assert builder.add(Decimal(9), T0 + timedelta(seconds=59)) is None
    assert builder.add(Decimal(1), T0 - timedelta(seconds=10)) is None  # an older bucket: ignored
    closed = builder.add(Decimal(11), T0 + timedelta(minutes=1, seconds=1))
    assert closed == Candle(T0, MINUTE, Decimal(10), Decimal(12), Decimal(9), Decimal(9), 3)


def test_candles_align_to_the_interval_whatever_the_first_tick() -> None:
    builder = CandleBuilder(timedelta(minutes=5))
    assert builder.bucket(T0 + timedelta(minutes=7, seconds=3)) == T0 + timedelta(minutes=5)


def test_averages() -> None:
    sma, ema = Sma(3), Ema(3)
    assert [sma.add(Decimal(v)) for v in (1, 2, 3, 4)] == [None, None, 2, 3]
    assert [ema.add(Decimal(v)) for v in (1, 2, 3, 4)] == [None, None, 2, 3]  # seed 2, +0.5*(4-2)


def test_rsi_uses_wilder_smoothing() -> None:
    # The textbook 14-period example. By hand: the first 14 changes gain 3.34 and lose 1.40,
    # so the first averages are 0.238571 and 0.1: RSI = 100 - 100 / (1 + 2.385714) = 70.4641.
    closes = ["44.34", "44.09", "44.15", "43.61", "44.33", "44.83", "45.10", "45.42", "45.84",
              "46.08", "45.89", "46.03", "45.61", "46.28", "46.28", "46.00"]  # fmt: skip
    rsi = create("rsi", {"period": 14})
    scores = feed(rsi, closes)
    assert scores[:14] == [None] * 14 and scores[14] is not None
    assert scores[14].value < 0  # overbought: a (small) sell
    # Then Wilder's smoothing, a loss of 0.28: gain (0.238571 x 13 + 0) / 14 = 0.221531,
    # loss (0.1 x 13 + 0.28) / 14 = 0.112857, RSI = 100 - 100 / (1 + 1.962930) = 66.2496.
    assert abs(rsi.last - Decimal("66.2496")) < Decimal("0.0001")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("closes", "sign"),
    [([10, 9, 8, 7, 6, 5], 1), ([5, 6, 7, 8, 9, 10], -1), ([5, 6, 5, 6, 5, 6], 0)],
)
def test_rsi_buys_oversold_and_sells_overbought(closes: list[int], sign: int) -> None:
    score = feed(create("rsi", {"period": 3}), closes)[-1]
    assert score is not None
    assert (score.value > 0) - (score.value < 0) == sign


def test_ma_cross_buys_when_fast_is_above_slow() -> None:
    signal = create("ma_cross", {"fast": 2, "slow": 4, "kind": "sma", "full_gap_pct": "1"})
    scores = feed(signal, [100, 100, 100, 100, 102, 104])
    assert scores[:3] == [None] * 3
    assert scores[3] == Score(Decimal(0), Decimal(1))
    assert scores[-1] is not None and scores[-1].value == 1  # gap 103 vs 101.5 = 1.48 % -> clamp


def test_macd_follows_a_turn() -> None:
    signal = create("macd", {"fast": 2, "slow": 4, "signal": 2})
    scores = feed(signal, [10, 10, 10, 10, 10, 11, 12])
    assert scores[-1] is not None and scores[-1].value > 0
    down = feed(signal, [11, 10, 9])[-1]
    assert down is not None and down.value < 0


def test_momentum_scores_the_change_over_its_lookback() -> None:
    scores = feed(create("momentum", {"lookback": 2, "full_pct": "2"}), [100, 100, 101, 103])
    assert scores == [None, None, Score(Decimal("0.5"), Decimal(1)), Score(Decimal(1), Decimal(1))]


def test_unknown_signals_and_parameters_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown signal 'vwap'"):
        create("vwap", {})
    with pytest.raises(ValueError, match="signal 'rsi'"):
        create("rsi", {"length": 14})
    with pytest.raises(ValueError, match="fast < slow"):
        create("ma_cross", {"fast": 5, "slow": 5})
    assert set(REGISTRY) >= {"rsi", "ma_cross", "macd", "momentum"}


class Fixed:
    def __init__(self, name: str, *values: str | None):
        self.name, self.values = name, list(values)

    def update(self, candle: Candle) -> Score | None:
        value = self.values.pop(0)
        return None if value is None else Score(Decimal(value), Decimal(1))


@pytest.mark.parametrize(
    ("a", "b", "direction", "temperature"),
    [
        ("1", "1", "buy", "100.0"),  # both sure, both agree
        ("0.8", "0.4", "buy", "60.0"),  # score 0.6, full agreement
        ("1", "-0.6", "hold", "15.0"),  # score 0.2, half the weight disagrees: 20 x 0.75
        ("-0.9", "-0.7", "sell", "80.0"),
        ("0", "0", "hold", "0.0"),
    ],
)
def test_blend_scores_direction_and_temperature(
    a: str, b: str, direction: str, temperature: str
) -> None:
    blend = Blend(
        [Weighted(Fixed("a", a), Decimal(1)), Weighted(Fixed("b", b), Decimal(1))],
        buy_threshold=Decimal("0.3"),
        sell_threshold=Decimal("0.3"),
    )
    evaluation = blend.update(candles(1)[0])
    assert evaluation.direction == direction
    assert evaluation.temperature == Decimal(temperature)


def test_a_bot_still_warming_up_runs_cold() -> None:
    blend = Blend(
        [Weighted(Fixed("a", "1"), Decimal(1)), Weighted(Fixed("b", None), Decimal(3))],
        buy_threshold=Decimal("0.5"),
        sell_threshold=Decimal("0.5"),
    )
    evaluation = blend.update(candles(1)[0])
    assert evaluation.direction == "buy" and evaluation.temperature == Decimal("25.0")


def blend_once(*signals: tuple[str, str, int]):
    """One candle through a blend of fixed scores (name, value, weight), thresholds 0.3."""
    blend = Blend(
        [Weighted(Fixed(name, value), Decimal(weight)) for name, value, weight in signals],
        buy_threshold=Decimal("0.3"),
        sell_threshold=Decimal("0.3"),
    )
    return blend.update(candles(1)[0])


def test_the_readme_blend_example() -> None:
    # README, "Bots, signals, temperature and confirmation": momentum (weight 2) +0.8 and RSI
    # (weight 1) +0.2 blend to 0.6, all agreeing: temperature 60, warm, a buy.
    evaluation = blend_once(("momentum", "0.8", 2), ("rsi", "0.2", 1))
    assert (evaluation.score, evaluation.temperature, evaluation.direction) == (
        Decimal("0.6"),
        Decimal("60.0"),
        "buy",
    )


def test_two_signals_of_the_same_kind_each_count_with_their_own_score() -> None:
    # A bot may blend, say, a fast and a slow RSI: both are named "rsi". Each must count with
    # its own score (the blend once looked scores up by name, so the last one's counted twice).
    evaluation = blend_once(("rsi", "0.9", 1), ("rsi", "-0.3", 1))
    assert (evaluation.score, evaluation.direction) == (Decimal("0.3"), "buy")
    assert evaluation.agreement == Decimal("0.5")
