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
from dataclasses import dataclass, field
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


TICK_PAUSE_S = 0.3
"""A round's wait after its price, before its signals (core NATS: every service sees it first)."""


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


@dataclass
class Drive:
    latencies: list[float] = field(default_factory=list)
    """Seconds from the injected signal to the booked position, one per booked order."""
    busy_s: float = 0.0
    refused: int = 0
    """Signals that safety rejected (fail closed: e.g. it had not yet seen the last fill)."""
    unfinished: int = 0
    """Signals with neither a position nor a rejection within the wait."""


async def drive(
    nats_url: str, bots: int, rounds: int, wait_s: float = 120, first_round: int = 0
) -> Drive:
    """``rounds`` rounds from round ``first_round`` on (a restarted stack goes on where the
    last drive stopped: market time later, and the side that follows the position)."""
    nc = await nats.connect(nats_url)
    arrived: dict[str, asyncio.Future[float | None]] = {}

    def resolve(subject: str, value: float | None) -> None:
        waiting = arrived.get(subject.rsplit(".", 1)[-1])
        if waiting is not None and not waiting.done():
            waiting.set_result(value)

    async def on_position(msg) -> None:
        resolve(msg.subject, time.perf_counter())

    async def on_rejected(msg) -> None:
        resolve(msg.subject, None)

    await nc.subscribe("tranche.ledger.positions.>", cb=on_position)
    await nc.subscribe("tranche.orders.rejected.>", cb=on_rejected)
    result = Drive()
    market = datetime(2018, 1, 20, tzinfo=UTC) + timedelta(minutes=10) * first_round
    for round_ in range(first_round, first_round + rounds):
        market += timedelta(minutes=10)
        tick = f'{{"product_id":"ETH-BTC","price":"0.09","time":"{market.isoformat()}"}}'
        await nc.publish("tranche.market.ticker.ETH-BTC", tick.encode())
        await nc.flush()
        await asyncio.sleep(TICK_PAUSE_S)  # core NATS: let every service see the price first
        side = "buy" if round_ % 2 == 0 else "sell"
        sent: dict[str, float] = {}
        started = time.perf_counter()
        for n in range(bots):
            bot = f"bench-{n}"
            arrived[bot] = asyncio.get_running_loop().create_future()
            sent[bot] = time.perf_counter()
            await nc.publish(f"tranche.signals.inject.{bot}", f'{{"side":"{side}"}}'.encode())
        deadline = time.perf_counter() + wait_s
        for bot, at in sent.items():
            try:
                left = max(deadline - time.perf_counter(), 0)
                booked = await asyncio.wait_for(arrived[bot], left)
            except TimeoutError:
                result.unfinished += 1
                continue
            if booked is None:
                result.refused += 1
            else:
                result.latencies.append(booked - at)
        result.busy_s += time.perf_counter() - started
        # As a trader would, let every service see the round's positions before the next
        # signals (safety rejects an exit whose entry fill it has not seen yet: fail closed).
        await asyncio.sleep(0.5)
    await nc.close()
    return result
