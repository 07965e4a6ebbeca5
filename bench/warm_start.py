"""Start to first position: how long the embedded stack takes from its start to booking the first
order, cold (a new data directory: databases made, streams provisioned) and warm (the same
directory again, as a second ``make up``). Issue 20's target: warm start to first position
within 8 s.

Each start is timed in two parts: from the start to every service answering ``/ready`` (NATS
started and provisioned, four interpreters importing their modules, opening their databases,
binding their consumers), then from there to the first position, one injected signal through
signal, safety, executor and ledger (:func:`bench.latency.drive`, one bot, one round). Beside it,
in the same run, the baseline that no Python service can beat: ``nats-server`` alone, from its
start to accepting connections, and one bare interpreter start (``python -c pass``).

``python -m bench.warm_start [--starts 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.latency import BOT, PRODUCT, TICK_PAUSE_S, drive
from bench.matrix import BENCH_ENV
from tranche.stack import EmbeddedStack, StackConfig, free_port


def one_start(root: Path, config: Path, round_: int) -> tuple[float, float]:
    """Seconds from start to every service ready, and from there to the first position."""
    stack = EmbeddedStack(
        StackConfig(
            data_dir=root / "data",
            nats_port=free_port(),
            nats_monitor_port=free_port(),
            ports={name: free_port() for name in ("signal", "safety", "executor", "ledger")},
            replay="",
            config_file=config,
            extra_env=BENCH_ENV,
        )
    )
    started = time.perf_counter()
    stack.start()
    try:
        ready = time.perf_counter() - started
        driven = asyncio.run(
            drive(stack.config.admin_url, bots=1, rounds=1, wait_s=60, first_round=round_)
        )
        if not driven.latencies:
            raise RuntimeError(f"no position booked (refused {driven.refused})")
    finally:
        stack.stop()
    # The drive's own pauses are not the stack's: TICK_PAUSE_S for the price to reach every
    # service, then the signal's time to its booked position (its trailing pause left out).
    return ready, TICK_PAUSE_S + driven.busy_s


def nats_alone(root: Path) -> float:
    """Seconds from starting ``nats-server`` (JetStream on, the per-service users) to its streams
    provisioned: the part of a start before any service."""
    stack = EmbeddedStack(
        StackConfig(
            data_dir=root / "nats-only",
            nats_port=free_port(),
            nats_monitor_port=free_port(),
            ports={},
            replay="",
        )
    )
    started = time.perf_counter()
    stack.start_nats()
    took = time.perf_counter() - started
    stack.stop_nats()
    return took


def bare_interpreter() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=3, help="warm starts after the cold one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tranche-start-") as scratch:
        root = Path(scratch)
        config = root / "bots.toml"
        config.write_text(PRODUCT + BOT.format(n=0))
        cold = one_start(root, config, 0)
        warm = [one_start(root, config, n) for n in range(1, args.starts + 1)]
        nats_s = statistics.median(nats_alone(root) for _ in range(3))
    python_s = statistics.median(bare_interpreter() for _ in range(3))
    print("| start | to every service ready s | ready to first position s | total s |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| cold | {cold[0]:.2f} | {cold[1]:.2f} | {sum(cold):.2f} |")
    for n, (ready, first) in enumerate(warm, 1):
        print(f"| warm {n} | {ready:.2f} | {first:.2f} | {ready + first:.2f} |")
    best = min(sum(w) for w in warm)
    print(f"\nwarm start to first position: best {best:.2f} s, median "
          f"{statistics.median(sum(w) for w in warm):.2f} s (target 8 s)")  # fmt: skip
    print(f"baselines in the same run: nats-server started and provisioned {nats_s:.2f} s, "
          f"a bare interpreter start {python_s:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
