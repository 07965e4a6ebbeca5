"""A seeded random walk of prices: market data for trying bots where no real feed is wanted.

The same seed gives the same prices (the steps come from ``random.Random(seed)``); prices are
quantized to ``increment`` and never reach zero.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from shared.contracts import Ticker


def random_walk(
    product_id: str,
    start_price: Decimal,
    start_time: datetime,
    *,
    seed: int,
    step: timedelta = timedelta(seconds=1),
    volatility_pct: Decimal = Decimal("0.05"),
    increment: Decimal = Decimal("0.01"),
) -> Iterator[Ticker]:
    """Endless ticks, one per ``step`` of event time, each a Gaussian move of the last price."""
    rng = random.Random(seed)
    price, time = start_price, start_time
    sigma = volatility_pct / 100
    while True:
        yield Ticker(product_id=product_id, price=price, time=time, source="random_walk")
        move = Decimal(repr(rng.gauss(0.0, 1.0))) * sigma
        price = max(increment, (price * (1 + move)).quantize(increment, ROUND_HALF_EVEN))
        time += step


def parse_walk_spec(spec: str) -> list[tuple[str, Decimal]]:
    """``"BTC-USD=50000,ETH-USD=3000"`` -> pairs; a bad item is a ValueError saying which."""
    pairs = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        product, sep, price = item.partition("=")
        try:
            start = Decimal(price)
        except ArithmeticError:
            start = Decimal(0)
        if not sep or not product or start <= 0:
            raise ValueError(f"TRANCHE_RANDOM_WALK: {item!r} is not PRODUCT=start_price")
        pairs.append((product, start))
    return pairs
