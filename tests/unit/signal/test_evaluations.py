"""The signal handlers without an evaluation publisher (the backtest, whose journal holds no
evaluations): the same intents as with one, every evaluation counted, none built."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from shared.catalog import Bot, SignalSpec
from shared.contracts import Ticker
from tests.support.signal_harness import SignalHarness, signal_harness

T0 = datetime(2018, 1, 20, tzinfo=UTC)
BOT = Bot(
    product_id="ETH-BTC",
    quote_size=Decimal("0.01"),
    confirm_evaluations=1,
    confirm_seconds=0,
    signals=[SignalSpec(name="momentum", params={"lookback": 1, "full_pct": "0.1"})],
)


def rising(harness: SignalHarness, minutes: int) -> SignalHarness:
    """A price up 0.1 % a minute: the bot's momentum says buy on every closed candle."""
    harness.bots.add("b", BOT)

    async def run() -> None:
        for n in range(minutes):
            price = (Decimal("0.1") * (1 + Decimal("0.001") * n)).quantize(Decimal("1e-8"))
            tick = Ticker(product_id="ETH-BTC", price=price, time=T0 + timedelta(minutes=n))
            await harness.handlers.evaluate_tick(tick)

    asyncio.run(run())
    return harness


def test_without_a_publisher_the_bot_decides_the_same_and_counts_every_evaluation() -> None:
    published = rising(signal_harness(), 8)
    silent = signal_harness()
    silent.handlers.publish_evaluation = None
    rising(silent, 8)
    assert published.intents, "the rising price made no intent: the test proves nothing"
    assert [i.model_dump() for i in silent.intents] == [i.model_dump() for i in published.intents]
    assert silent.handlers.evaluated == published.handlers.evaluated == len(published.evaluations)
    assert silent.evaluations == []
