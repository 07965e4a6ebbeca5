"""``tranche backtest FILE...``: recorded market data through the services' own decision code in
one process (``tranche/backtest/engine.py``), the report a trader reads (``report.py``: terminal,
``--json``, ``--html``); ``--compare-replay`` also runs ``tranche replay`` on the same file and
shows that both decided the same (or where they part); ``--set`` sweeps a bot's settings
(``sweep.py``), one process per combination."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import tempfile
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from rich.console import Console

from shared.catalog import CatalogError, load_catalog
from tranche.backtest.sweep import add_sweep_options
from tranche.replay import _utc, check_rows, product_of
from tranche.stack import StackError

if TYPE_CHECKING:
    from tranche.backtest.engine import Run
    from tranche.backtest.parity import Parity
    from tranche.backtest.result import BacktestResult


def register(commands: argparse._SubParsersAction) -> None:
    backtest = commands.add_parser(
        "backtest", help="backtest bots on CSV files of candles or trades, in one process"
    )
    backtest.add_argument(
        "files", type=Path, nargs="+", metavar="FILE",
        help="a CSV per product (its product from the file name, or PRODUCT=FILE)",
    )  # fmt: skip
    backtest.add_argument("--config", type=Path, help="bots file (default: the sample)")
    backtest.add_argument(
        "--bots", help="comma-separated bot ids (default: every bot whose product is in the files)"
    )
    backtest.add_argument("--start", type=_utc, help="rows at or after this time (ISO 8601, UTC)")
    backtest.add_argument("--end", type=_utc, help="rows before this time (ISO 8601, UTC)")
    backtest.add_argument("--fee-rate", type=Decimal, help="the mock exchange's taker fee rate")
    backtest.add_argument("--json", type=Path, metavar="PATH", help="write the result as JSON")
    backtest.add_argument("--html", type=Path, metavar="PATH", help="write the HTML report")
    backtest.add_argument(
        "--compare-replay",
        action="store_true",
        help="also replay the file through the services (slow) and compare the journals",
    )
    add_sweep_options(backtest)
    backtest.set_defaults(run=cmd_backtest)


def quiet_logs() -> None:
    """The services' handlers log every signal at info: a backtest keeps warnings only."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=True,
    )


def files_of(paths: list[Path], products: list[str]) -> list[tuple[str, Path]]:
    found = []
    for given in paths:
        product, sep, rest = str(given).partition("=")
        path = Path(rest) if sep else given
        if not path.is_file():
            raise StackError(f"{path} does not exist")
        found.append((product if sep else product_of(path, products), path))
    return found


def cmd_backtest(args: argparse.Namespace) -> int:
    # The services' code loads here, not with every other command (it takes a second or more).
    from tranche.backtest.engine import BacktestError, Options, run_backtest
    from tranche.backtest.report import write_outputs
    from tranche.backtest.sweep import run_sweep

    console = Console()
    quiet_logs()
    try:
        catalog = load_catalog(args.config)
        files = files_of(args.files, list(catalog.products))
        for product, path in files:
            check_rows(path, product)
        bots = [b.strip() for b in args.bots.split(",") if b.strip()] if args.bots else None
        options = Options(fee_rate=args.fee_rate)
        if args.sweep:
            if args.compare_replay or args.json or args.html:
                raise StackError(
                    "--set runs a sweep: it takes no --compare-replay, --json or --html"
                )
            run_one = functools.partial(
                run_with_overrides, args.config, files, bots, args.start, args.end, args.fee_rate
            )
            return run_sweep(run_one, catalog.bots, args.sweep, args.sort_by, console)
        if args.compare_replay:
            return compare(args, catalog, files, bots, options, console)
        run = asyncio.run(run_backtest(catalog, files, bots, args.start, args.end, options))
        print_summary(run, console)
        write_outputs(run.result, args.json, args.html, console)
    except (StackError, BacktestError, CatalogError) as error:
        console.print(f"[bold red]backtest failed:[/] {error}")
        return 1
    return 0


def compare(args, catalog, files, bots, options, console: Console) -> int:
    from tranche.backtest.parity import compare_with_replay
    from tranche.backtest.report import write_outputs

    if len(files) != 1:
        raise StackError("--compare-replay takes one file (a replay runs one)")
    (product, path), work = files[0], Path(tempfile.mkdtemp(prefix="tranche-parity-"))
    console.print(f"backtesting and replaying {path.name} (the replay takes a while) ...")
    parity = compare_with_replay(catalog, args.config, path, product, work, bots=bots,
                                 start=args.start, end=args.end, options=options)  # fmt: skip
    print_summary(parity.run, console)
    write_outputs(parity.run.result, args.json, args.html, console)
    return print_parity(parity, console)


def print_parity(parity: Parity, console: Console) -> int:
    """Say whether the two runs made the same journal; if not, where they first part. Returns
    the command's exit status."""
    if parity.equal:
        console.print(
            f"parity: the backtest and the replay ({parity.replay_seconds} s) made the same "
            f"journal, fingerprint {parity.backtest}"
        )
        return 0
    console.print(
        f"[bold red]parity broken:[/] backtest {parity.backtest}, replay {parity.replay}; "
        "where they part (replay != backtest):"
    )
    for line in parity.differences:
        console.print(f"  {line}", soft_wrap=True)
    return 1


def print_summary(run: Run, console: Console) -> None:
    """The report's tables, then how long the run took."""
    from tranche.backtest.report import render

    render(run.result, "table", console)
    console.print(
        f"{run.result.candles:,} candles in {run.seconds:.2f} s ({run.candles_per_s:,.0f}/s)",
        soft_wrap=True,
    )


def run_with_overrides(
    config: Path | None,
    files: list[tuple[str, Path]],
    bots: list[str] | None,
    start: datetime | None,
    end: datetime | None,
    fee_rate: Decimal | None,
    overrides: dict[str, object],
) -> BacktestResult:
    """One combination of a sweep, in a worker process: the bots file with ``overrides`` set."""
    from tranche.backtest.engine import Options, run_backtest
    from tranche.backtest.sweep import apply_overrides

    quiet_logs()
    catalog = load_catalog(config)
    catalog = catalog.model_copy(update={"bots": apply_overrides(catalog.bots, overrides)})
    options = Options(fee_rate=fee_rate)
    return asyncio.run(run_backtest(catalog, files, bots, start, end, options)).result
