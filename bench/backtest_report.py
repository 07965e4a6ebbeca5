"""What the backtest report costs on a whole recorded file.

    python -m bench.backtest_report [FILE] [--repeat N]

Reads a candle file (default: the bundled ETH-BTC minutes, 14,397 candles), makes a result of one
bot that holds 1.1 base for 60 candles every 150 (fees 0.6 %; a stand-in for the engine's
fills, booked at average cost), and times, N times each, the figures (``report_of``), the JSON
and the HTML page. Figures only, no assertion.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal

from tests.support.backtest_results import book
from tranche.backtest.metrics import report_of
from tranche.backtest.report import to_json, write_html
from tranche.backtest.result import BacktestResult, BookedFill, BotRun, Mark
from tranche.stack import ROOT

FEE = Decimal("0.006")
SIZE = Decimal("1.1")


def result_of(path: Path, product: str) -> BacktestResult:
    with path.open() as rows:
        marks = [
            Mark(datetime.fromisoformat(row["time"]), product, Decimal(row["close"]))
            for row in csv.DictReader(rows)
        ]
    fills = []
    for i in range(0, len(marks) - 60, 150):
        entry, exit_ = marks[i], marks[i + 60]
        fills.append(fill_at(entry, product, "BUY", "ENTRY"))
        fills.append(fill_at(exit_, product, "SELL", "SIGNAL_EXIT"))
    trips, still_open = book(fills, {product: marks[-1].price})
    bot = BotRun("bench", product, product.split("-")[1], Decimal("0.3"))
    return BacktestResult(
        start=marks[0].at,
        end=marks[-1].at,
        bots=[bot],
        marks=marks,
        fills=fills,
        round_trips=trips,
        open_positions=still_open,
        candles=len(marks),
        fee_rate=FEE,
    )


def fill_at(mark: Mark, product: str, side: Literal["BUY", "SELL"], reason: str) -> BookedFill:
    fee = mark.price * SIZE * FEE
    return BookedFill(mark.at, "bench", product, side, mark.price, SIZE, fee, reason)


def timed(work: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", type=Path, default=ROOT / "data" / "ETH-BTC-1m.csv")
    parser.add_argument("--product", default="ETH-BTC")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    result = result_of(args.file, args.product)
    trips = len(result.round_trips)
    print(f"{result.candles:,} candles, {len(result.fills)} fills, {trips} round trips")
    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "report.html"
        for name, work in (
            ("figures (report_of)", lambda: report_of(result)),
            ("JSON (to_json)", lambda: to_json(result)),
            ("HTML page (write_html)", lambda: write_html(result, page)),
        ):
            times = timed(work, args.repeat)
            print(
                f"{name:<24} min {min(times):.3f} s  median {statistics.median(times):.3f} s  "
                f"max {max(times):.3f} s"
            )
        print(f"HTML page: {page.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
