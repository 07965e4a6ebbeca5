"""End-to-end latency: an injected, confirmed signal to the booked position, through the four
services as processes on a real NATS server, against the bare relay in the same run.

    python -m bench.latency [--bots 1 10 100] [--rounds 20] [--relay-messages 200]

Each round moves market time forward 10 minutes (past every cooldown), then injects one signal
per bot (buy on even rounds, sell on odd: every signal books a fill) and times each from the
publish to the position update on ``tranche.ledger.positions.<bot>``. Prints p50/p95/p99, the
throughput of a round, and each figure as a ratio to the relay's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats

from bench.relay import run_relay
from tranche.stack import SERVICES, EmbeddedStack, StackConfig, free_port

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


def run(bots: int, rounds: int, relay_messages: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="tranche-bench-") as scratch:
        root = Path(scratch)
        config = root / "bots.toml"
        config.write_text(PRODUCT + "".join(BOT.format(n=n) for n in range(bots)))
        stack = EmbeddedStack(
            StackConfig(
                data_dir=root / "data",
                nats_port=free_port(),
                nats_monitor_port=free_port(),
                ports={name: free_port() for name in SERVICES},
                replay="",
                config_file=config,
                extra_env={"TRANCHE_LOG_LEVEL": "warning"},
            )
        )
        stack.start()
        try:
            # As admin: the bench plays the market and makes its own relay stream.
            relay = asyncio.run(run_relay(stack.config.admin_url, relay_messages))
            latencies, busy = asyncio.run(drive(stack.config.admin_url, bots, rounds))
        finally:
            stack.stop()
    return {
        "bots": bots,
        "signals": len(latencies),
        "tranche": summary(latencies),
        "relay": summary(relay),
        "orders_per_s": len(latencies) / busy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bots", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--relay-messages", type=int, default=200)
    args = parser.parse_args()
    header = ("bots", "signals", "p50 ms", "p95 ms", "p99 ms", "relay p50", "relay p99",
              "p50 x", "p99 x", "orders/s")  # fmt: skip
    print(" ".join(f"{column:>9}" for column in header))
    for bots in args.bots:
        result = run(bots, args.rounds, args.relay_messages)
        t, r = result["tranche"], result["relay"]
        row = (bots, result["signals"], t["p50"], t["p95"], t["p99"], r["p50"], r["p99"],  # type: ignore[index]
               t["p50"] / r["p50"], t["p99"] / r["p99"], result["orders_per_s"])  # type: ignore[index]  # fmt: skip
        print(
            " ".join(f"{v:>9.1f}" if isinstance(v, float) else f"{v:>9}" for v in row), flush=True
        )


if __name__ == "__main__":
    main()
