"""End-to-end latency: an injected, confirmed signal to the booked position, through the four
services as processes on a real NATS server (the driver of ``make bench``, :mod:`bench.matrix`).

Each round moves market time forward 10 minutes (past every cooldown), then injects one signal
per bot (buy on even rounds, sell on odd: every signal books a fill) and times each from the
publish to the position update on ``tranche.ledger.positions.<bot>``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta

import nats

PRODUCT = """
[products.ETH-BTC]
base_min_size = "0.001"
base_increment = "0.00000001"
quote_increment = "0.00000001"
quote_min_size = "0.0001"
"""
BOT = """
[bots.bench-{n}]
product_id = "ETH-BTC"
quote_size = "0.01"
confirm_evaluations = 1
confirm_seconds = 0
"""


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50) * 1000,
        "p95": percentile(values, 95) * 1000,
        "p99": percentile(values, 99) * 1000,
        "mean": statistics.fmean(values) * 1000,
    }


async def drive(nats_url: str, bots: int, rounds: int) -> tuple[list[float], float]:
    nc = await nats.connect(nats_url)
    arrived: dict[str, asyncio.Future[float]] = {}

    async def on_position(msg) -> None:
        bot = msg.subject.rsplit(".", 1)[-1]
        waiting = arrived.get(bot)
        if waiting is not None and not waiting.done():
            waiting.set_result(time.perf_counter())

    await nc.subscribe("tranche.ledger.positions.>", cb=on_position)
    market = datetime(2018, 1, 20, tzinfo=UTC)
    latencies: list[float] = []
    busy = 0.0
    for round_ in range(rounds):
        market += timedelta(minutes=10)
        tick = f'{{"product_id":"ETH-BTC","price":"0.09","time":"{market.isoformat()}"}}'
        await nc.publish("tranche.market.ticker.ETH-BTC", tick.encode())
        await nc.flush()
        await asyncio.sleep(0.3)  # core NATS: let every service see the price first
        side = "buy" if round_ % 2 == 0 else "sell"
        sent: dict[str, float] = {}
        started = time.perf_counter()
        for n in range(bots):
            bot = f"bench-{n}"
            arrived[bot] = asyncio.get_running_loop().create_future()
            sent[bot] = time.perf_counter()
            await nc.publish(f"tranche.signals.inject.{bot}", f'{{"side":"{side}"}}'.encode())
        for bot, at in sent.items():
            latencies.append(await asyncio.wait_for(arrived[bot], 120) - at)
        busy += time.perf_counter() - started
    await nc.close()
    return latencies, busy
