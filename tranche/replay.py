"""``tranche replay FILE``: run recorded market data through the real services, as fast as they
go, and print what every bot made of it.

It starts its own embedded stack (free ports, a fresh data directory) so it never touches a
running ``tranche up``, waits until the feed is done and the books are quiet, and reads the
result over HTTP like ``tranche status``.

Deterministic by default: the signal service replays in lock step (after each tick it waits
until every intent so far is decided and, when approved, filled, booked and seen by safety;
``services/signal/lockstep.py``) and the mock exchange fills at the intent's price and market
time (``TRANCHE_MOCK_FILL_AT=intent``), so the same data gives the same intents, decisions, fills
and P&L every time. The run's journal (every durable message it published) is condensed into a
fingerprint to compare runs by. ``--no-lockstep`` replays as fast as the feed goes instead.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from services.signal.feeds.replay import ReplayError, read_ticks
from shared.catalog import load_catalog
from tranche.journal import Journal, fingerprint, read_journal
from tranche.stack import SERVICES, EmbeddedStack, StackConfig, StackError, free_port
from tranche.tables import print_fitted

REPLAY_SERVICES = tuple(name for name in SERVICES if name != "dashboard")  # nobody watches


def register(commands: argparse._SubParsersAction) -> None:
    replay = commands.add_parser("replay", help="replay a CSV of candles or trades, print P&L")
    replay.add_argument("file", type=Path)
    replay.add_argument("--product", help="product id (default: from the file name)")
    replay.add_argument("--config", type=Path, help="bots file (default: the sample)")
    replay.add_argument("--speed", type=float, default=0.0, help="event s per wall s; 0 = max")
    replay.add_argument("--start", type=_utc, help="rows at or after this time (ISO 8601, UTC)")
    replay.add_argument("--end", type=_utc, help="rows before this time (ISO 8601, UTC)")
    replay.add_argument("--rows", type=int, help="at most this many rows (after --start)")
    replay.add_argument(
        "--no-lockstep",
        dest="lockstep",
        action="store_false",
        help="publish ticks as fast as the feed goes and fill at the latest price (not "
        "deterministic)",
    )
    replay.add_argument(
        "--settle-timeout", type=float, default=30.0, help="lock step: seconds per intent"
    )
    replay.add_argument("--data-dir", type=Path, help="keep the run's data here")
    replay.add_argument("--timeout", type=float, default=1800)
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(run=cmd_replay)


def parse_utc(text: str) -> datetime:
    """An ISO 8601 time; one without a zone is UTC (the bundled data's times all are)."""
    at = datetime.fromisoformat(text)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _utc(text: str) -> datetime:
    try:
        return parse_utc(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None


def product_of(file: Path, products: list[str]) -> str:
    matches = [p for p in products if file.name.upper().startswith(p.upper())]
    if len(matches) != 1:
        raise StackError(f"cannot tell the product of {file.name}: say --product")
    return matches[0]


def slice_rows(
    source: Path,
    target: Path,
    start: datetime | None = None,
    end: datetime | None = None,
    rows: int | None = None,
) -> int:
    """Copy the rows of ``source`` with ``start <= time < end`` (at most ``rows`` of them) to
    ``target`` with the same header; returns how many. The ``time`` column is the row's time (a
    candle's open time)."""
    with source.open(newline="") as handle, target.open("w", newline="") as out:
        reader = csv.DictReader(handle)
        if "time" not in (reader.fieldnames or ()):
            raise StackError(f"{source.name} has no time column to slice by")
        writer = csv.DictWriter(out, fieldnames=reader.fieldnames or [], lineterminator="\n")
        writer.writeheader()
        kept = 0
        for number, row in enumerate(reader, start=2):
            try:
                at = parse_utc(row["time"] or "")
            except ValueError:
                raise StackError(
                    f"{source.name}, row {number}: field time: {row['time']!r} is not an ISO "
                    "8601 time"
                ) from None
            if (start and at < start) or (end and at >= end):
                continue
            if rows is not None and kept >= rows:
                break
            writer.writerow(row)
            kept += 1
    return kept


def check_rows(file: Path, product: str) -> None:
    """Read the whole file as the signal service will, before starting anything: a bad row
    stops the replay at once with the file, row and field (the services would refuse it)."""
    try:
        for _ in read_ticks(file, product):
            pass
    except ReplayError as error:
        raise StackError(str(error)) from None


def wait_until_done(
    stack: EmbeddedStack, product: str, timeout: float, console: Console, quiet_s: float = 3.0
) -> tuple[dict[str, Any], float]:
    """Wait for the feed to finish (returns its status); then, unless ``quiet_s`` is 0, for the
    signal's latest price and the books to stay unchanged that long (the last ticks may still be
    evaluated and the last intents on their way). Returns the feed's status and the monotonic
    time the run was done at (the last change seen)."""
    signal, ledger = stack.config.url("signal"), stack.config.url("ledger")
    deadline = time.monotonic() + timeout
    shown = 0.0
    while time.monotonic() < deadline:
        feed = httpx.get(f"{signal}/feeds", timeout=5).json().get(product, {})
        if feed.get("failed"):
            raise StackError(feed["failed"])
        if feed.get("finished"):
            break
        if time.monotonic() - shown > 2:
            console.print(f"  replayed up to {feed.get('last_time') or '...'}")
            shown = time.monotonic()
        time.sleep(0.2)
    else:
        raise StackError(f"the replay did not finish within {timeout:g} s")
    # Published is not evaluated: without lock step the signal service may still be working
    # through the ticks, so quiet means its latest price and the books both stand still.
    last, since = None, time.monotonic()
    while quiet_s and time.monotonic() < deadline:
        evaluated = httpx.get(f"{signal}/feeds", timeout=5).json().get(product, {})
        now = (evaluated.get("last_time"), httpx.get(f"{ledger}/positions", timeout=5).json())
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > quiet_s:
            return feed, since
        time.sleep(0.3)
    if quiet_s:
        raise StackError("the books did not settle")
    return feed, time.monotonic()


def evaluations(stack: EmbeddedStack) -> int:
    """How many evaluations the signal service published (its Prometheus counter)."""
    text = httpx.get(f"{stack.config.url('signal')}/metrics", timeout=10).text
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "tranche_signal_evaluations"
            for sample in family.samples
            if sample.name == "tranche_signal_evaluations_total"
        )
    )


def results(stack: EmbeddedStack, journal: Journal) -> dict[str, Any]:
    """Per bot: fills, decisions (from the journal: every one, not a page of them) and P&L."""
    ledger = stack.config.url("ledger")
    views = httpx.get(f"{ledger}/positions", timeout=10).json()
    bots = []
    for view in views:
        position = view["position"]
        bot = position["bot_id"]
        fills = httpx.get(f"{ledger}/fills", params={"bot_id": bot}, timeout=10).json()
        bots.append(
            {
                "bot_id": bot,
                "fills": len(fills),
                "approved": len(journal.get(f"approved {bot}", [])),
                "rejected": len(journal.get(f"rejected {bot}", [])),
                "realized_pnl": position["realized_pnl_total"],
                "unrealized_pnl": view["unrealized_pnl"],
                "open_quantity": position["quantity"],
                "fees_paid": str(sum((Decimal(f["fee"]) for f in fills), Decimal(0))),
            }
        )
    summary = httpx.get(f"{ledger}/summary", timeout=10).json()
    return {"bots": bots, "summary": summary}


def replay_stack(
    file: Path,
    product: str,
    data_dir: Path,
    *,
    config_file: Path | None = None,
    speed: float = 0.0,
    lockstep: bool = True,
    settle_timeout_s: float = 30.0,
) -> EmbeddedStack:
    """The stack a replay runs on: free ports, no dashboard, lock step and fills at the intent's
    price unless ``lockstep`` is off."""
    deterministic = {
        "signal": {
            "TRANCHE_REPLAY_LOCKSTEP": "true",
            "TRANCHE_REPLAY_SETTLE_TIMEOUT_S": str(settle_timeout_s),
        },
        "executor": {"TRANCHE_MOCK_FILL_AT": "intent"},
    }
    return EmbeddedStack(
        StackConfig(
            data_dir=data_dir,
            nats_port=free_port(),
            nats_monitor_port=free_port(),
            ports={name: free_port() for name in REPLAY_SERVICES},
            replay=f"{product}={file.resolve()}",
            replay_speed=speed,
            config_file=config_file.resolve() if config_file else None,
            service_env=deterministic if lockstep else {},
        )
    )


def run_replay(stack: EmbeddedStack, product: str, timeout: float, console: Console) -> dict:
    """Start ``stack``, replay, read the outcome and the journal, stop. Raises StackError."""
    stack.start()
    try:
        started = time.monotonic()
        lockstep = "TRANCHE_REPLAY_LOCKSTEP" in stack.config.service_env.get("signal", {})
        # In lock step the feed finishes only once its last intent has settled: nothing to wait.
        feed, done = wait_until_done(stack, product, timeout, console, 0 if lockstep else 3)
        seconds = done - started
        journal = read_journal(stack.config.admin_url)
        evaluated = evaluations(stack)
        return results(stack, journal) | {
            "seconds": round(seconds, 1),
            "ticks": feed.get("ticks"),
            "evaluations": evaluated,
            "evaluations_per_s": round(evaluated / seconds, 1) if seconds else None,
            "lockstep": feed.get("lockstep", False),
            "fingerprint": fingerprint(journal),
            "journal": journal,
        }
    finally:
        stack.stop()


def cmd_replay(args: argparse.Namespace) -> int:
    console = Console(stderr=args.json)
    catalog = load_catalog(args.config)
    try:
        if not args.file.is_file():
            raise StackError(f"{args.file} does not exist")
        product = args.product or product_of(args.file, list(catalog.products))
        data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="tranche-replay-"))
        file = args.file
        if args.start or args.end or args.rows is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
            file = data_dir / f"{args.file.stem}-slice.csv"
            if not slice_rows(args.file, file, args.start, args.end, args.rows):
                raise StackError(f"no rows of {args.file.name} in the slice asked for")
        check_rows(file, product)
        stack = replay_stack(
            file, product, data_dir, config_file=args.config, speed=args.speed,
            lockstep=args.lockstep, settle_timeout_s=args.settle_timeout,
        )  # fmt: skip
        how = "lock step" if args.lockstep else "no lock step"
        console.print(f"replaying {file.name} as {product}, {how} (data in {data_dir}) ...")
        outcome = run_replay(stack, product, args.timeout, console)
    except StackError as error:
        console.print(f"[bold red]replay failed:[/] {error}")
        return 1
    journal = outcome.pop("journal")
    if args.json:
        print(json.dumps(outcome, indent=2))
        return 0
    print_fitted(
        console,
        f"{file.name}: {product}, mock mode, {outcome['seconds']} s",
        ("bot", "fills", "approved", "rejected", "realized P&L", "unrealized P&L", "open", "fees"),
        [
            (
                bot["bot_id"],
                str(bot["fills"]),
                str(bot["approved"]),
                str(bot["rejected"]),
                bot["realized_pnl"],
                bot["unrealized_pnl"] or "no price",
                bot["open_quantity"],
                bot["fees_paid"],
            )
            for bot in outcome["bots"]
        ],
        caption=(
            f"{outcome['ticks']} ticks, {outcome['evaluations']} evaluations "
            f"({outcome['evaluations_per_s']}/s), {sum(map(len, journal.values()))} messages, "
            f"fingerprint {outcome['fingerprint']}"
        ),
    )
    return 0
