"""The backtest's speed beside the service replay's, on the bundled data, in one session.

    python -m bench.backtest                 # both; the replay of the whole file takes a minute+
    python -m bench.backtest --no-replay     # the backtest only
    python -m bench.backtest --no-replay --split   # and where one bot's CPU time goes
    make bench-backtest

Prints candles (ticks) per second (of the wall clock, and of the process's CPU time, which other
sessions' load distorts less) of ``tranche backtest`` for one bot on the whole ETH-BTC file,
for every sample bot on both bundled files merged, and of ``tranche replay`` (the services in
lock step) on the whole ETH-BTC file, with each run's fingerprint: the backtest's and the
replay's of the same file and bot must be equal (parity), and the table says so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.signal.handlers import judge
from shared.catalog import load_catalog
from tranche.backtest.cli import quiet_logs
from tranche.backtest.engine import Run, file_ticks, merged, run_backtest
from tranche.backtest.inprocess import FixedBots
from tranche.backtest.parity import of_bots
from tranche.journal import fingerprint
from tranche.replay import replay_stack, run_replay
from tranche.stack import ROOT

ETH = ROOT / "data" / "ETH-BTC-1m.csv"
XRP = ROOT / "data" / "XRP-ETH-trades.csv"
BOT = "eth-btc-momentum"


def backtest(files: list[tuple[str, Path]], bots: list[str] | None) -> tuple[Run, float]:
    """The run and the CPU seconds it took: on a shared machine the wall clock counts the
    other sessions' work too, the process's CPU time only its own."""
    catalog = load_catalog(None)
    started = time.process_time()
    run = asyncio.run(run_backtest(catalog, files, bots))
    return run, time.process_time() - started


def split(files: list[tuple[str, Path]], bots: list[str], run_cpu: float) -> Table:
    """Where a backtest's CPU time goes: reading the files into ticks, the strategy's part
    (``judge``: candles, signals, confirmation; pure, it reads only the ticks), and the rest
    (what follows each tick in the signal service, and the services' work on the signals,
    intents, orders and fills), beside what the issue's 20,000 ticks per second allows."""
    catalog = load_catalog(None)
    started = time.process_time()
    ticks = list(merged(file_ticks(path, product) for product, path in files))
    read = time.process_time() - started
    roster = FixedBots()
    for bot_id in bots:
        roster.add(bot_id, catalog.bots[bot_id])
    started = time.process_time()
    for tick in ticks:
        judge(roster, tick)
    judged = time.process_time() - started
    table = Table(title=f"where the CPU time of one bot's backtest goes ({len(ticks):,} ticks)")
    for column in ("part", "cpu s", "µs a tick", "share"):
        table.add_column(column, no_wrap=True)
    parts = (
        ("reading the file", read),
        ("the strategy (judge)", judged),
        ("the rest: follow-up and the services' work", run_cpu - read - judged),
        ("the whole run", run_cpu),
        ("20,000 ticks/s allows", len(ticks) / 20_000),
    )
    for name, cpu in parts:
        table.add_row(name, f"{cpu:.2f}", f"{cpu / len(ticks) * 1e6:.1f}", f"{cpu / run_cpu:.0%}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-replay", action="store_true", help="skip the service replay")
    parser.add_argument("--rounds", type=int, default=3, help="backtest runs each (best kept)")
    parser.add_argument(
        "--split", action="store_true", help="also show where one bot's CPU time goes"
    )
    args = parser.parse_args()
    quiet_logs()
    console = Console()
    table = Table(
        title=f"backtest and replay, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    )
    columns = ("run", "bots", "ticks", "seconds", "ticks/s", "ticks/cpu-s", "fingerprint")
    for column in columns:
        table.add_column(column, no_wrap=True)

    def best(files: list[tuple[str, Path]], bots: list[str] | None) -> tuple[Run, float]:
        """The fastest round by the wall clock, and the least CPU time of any round."""
        runs = [backtest(files, bots) for _ in range(args.rounds)]
        return min(runs, key=lambda done: done[0].seconds)[0], min(cpu for _, cpu in runs)

    one, one_cpu = best([("ETH-BTC", ETH)], [BOT])
    both, both_cpu = best([("ETH-BTC", ETH), ("XRP-ETH", XRP)], None)
    for name, run, cpu in (
        ("backtest ETH-BTC", one, one_cpu),
        ("backtest ETH-BTC + XRP-ETH", both, both_cpu),
    ):
        table.add_row(
            name, str(len(run.result.bots)), str(run.result.candles), f"{run.seconds:.2f}",
            f"{run.candles_per_s:,.0f}", f"{run.result.candles / cpu:,.0f}",
            run.result.fingerprint or "",
        )  # fmt: skip
    if not args.no_replay:
        work = Path(tempfile.mkdtemp(prefix="tranche-bench-replay-"))
        started = time.monotonic()
        outcome = run_replay(
            replay_stack(ETH, "ETH-BTC", work, settle_timeout_s=90), "ETH-BTC", 1800,
            Console(quiet=True),
        )  # fmt: skip
        wall = time.monotonic() - started
        theirs = fingerprint(of_bots(outcome["journal"], [BOT]))
        table.add_row(
            "replay ETH-BTC (services, lock step)", "1", str(outcome["ticks"]),
            f"{outcome['seconds']}", f"{outcome['ticks'] / outcome['seconds']:,.0f}", "", theirs,
        )  # fmt: skip
        ours = fingerprint(of_bots(one.journal, [BOT]))
        table.caption = (
            f"replay wall time with start and stop {wall:.0f} s; parity on the whole file: "
            + ("the same journal" if ours == theirs else f"BROKEN ({ours} != {theirs})")
        )
    console.print(table)
    if args.split:
        console.print(split([("ETH-BTC", ETH)], [BOT], one_cpu))


if __name__ == "__main__":
    main()
