"""``tranche replay FILE``: run recorded market data through the real services, as fast as they
go, and print what every bot made of it.

It starts its own embedded stack (free ports, a fresh data directory) so it never touches a
running ``tranche up``, waits until the feed is done and the books are quiet, and reads the
result over HTTP like ``tranche status``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from shared.catalog import load_catalog
from tranche.stack import SERVICES, EmbeddedStack, StackConfig, StackError, free_port


def register(commands: argparse._SubParsersAction) -> None:
    replay = commands.add_parser("replay", help="replay a CSV of candles or trades, print P&L")
    replay.add_argument("file", type=Path)
    replay.add_argument("--product", help="product id (default: from the file name)")
    replay.add_argument("--config", type=Path, help="bots file (default: the sample)")
    replay.add_argument("--speed", type=float, default=0.0, help="event s per wall s; 0 = max")
    replay.add_argument("--data-dir", type=Path, help="keep the run's data here")
    replay.add_argument("--timeout", type=float, default=1800)
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(run=cmd_replay)


def product_of(file: Path, products: list[str]) -> str:
    matches = [p for p in products if file.name.upper().startswith(p.upper())]
    if len(matches) != 1:
        raise StackError(f"cannot tell the product of {file.name}: say --product")
    return matches[0]


def wait_until_done(stack: EmbeddedStack, product: str, timeout: float, console: Console) -> None:
    signal, ledger = stack.config.url("signal"), stack.config.url("ledger")
    deadline = time.monotonic() + timeout
    shown = 0.0
    while time.monotonic() < deadline:
        feed = httpx.get(f"{signal}/feeds", timeout=5).json().get(product, {})
        if feed.get("finished"):
            break
        if time.monotonic() - shown > 2:
            console.print(f"  replayed up to {feed.get('last_time') or '...'}")
            shown = time.monotonic()
        time.sleep(0.2)
    else:
        raise StackError(f"the replay did not finish within {timeout:g} s")
    # The feed is done; the last intents may still be on their way through safety, the
    # executor and the ledger. Quiet = the books unchanged for three seconds.
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        now = httpx.get(f"{ledger}/positions", timeout=5).json()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 3:
            return
        time.sleep(0.3)
    raise StackError("the books did not settle")


def results(stack: EmbeddedStack) -> dict[str, Any]:
    ledger, safety = stack.config.url("ledger"), stack.config.url("safety")
    views = httpx.get(f"{ledger}/positions", timeout=10).json()
    decisions = httpx.get(f"{safety}/decisions?limit=1000", timeout=10).json()
    bots = []
    for view in views:
        position = view["position"]
        bot = position["bot_id"]
        fills = httpx.get(f"{ledger}/fills", params={"bot_id": bot}, timeout=10).json()
        mine = [d for d in decisions if d["bot_id"] == bot]
        bots.append(
            {
                "bot_id": bot,
                "fills": len(fills),
                "approved": sum(1 for d in mine if d["approved"]),
                "rejected": sum(1 for d in mine if not d["approved"]),
                "realized_pnl": position["realized_pnl_total"],
                "unrealized_pnl": view["unrealized_pnl"],
                "open_quantity": position["quantity"],
                "fees_paid": str(sum((Decimal(f["fee"]) for f in fills), Decimal(0))),
            }
        )
    summary = httpx.get(f"{ledger}/summary", timeout=10).json()
    return {"bots": bots, "summary": summary}


def cmd_replay(args: argparse.Namespace) -> int:
    console = Console(stderr=args.json)
    catalog = load_catalog(args.config)
    try:
        if not args.file.is_file():
            raise StackError(f"{args.file} does not exist")
        product = args.product or product_of(args.file, list(catalog.products))
        data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="tranche-replay-"))
        stack = EmbeddedStack(
            StackConfig(
                data_dir=data_dir,
                nats_port=free_port(),
                nats_monitor_port=free_port(),
                ports={name: free_port() for name in SERVICES},
                replay=f"{product}={args.file.resolve()}",
                replay_speed=args.speed,
                config_file=args.config.resolve() if args.config else None,
            )
        )
        console.print(f"replaying {args.file.name} as {product} (data in {data_dir}) ...")
        stack.start()
    except StackError as error:
        console.print(f"[bold red]cannot replay:[/] {error}")
        return 2
    try:
        started = time.monotonic()
        wait_until_done(stack, product, args.timeout, console)
        outcome = results(stack) | {"seconds": round(time.monotonic() - started, 1)}
    except StackError as error:
        console.print(f"[bold red]replay failed:[/] {error}")
        return 1
    finally:
        stack.stop()
    if args.json:
        print(json.dumps(outcome, indent=2))
        return 0
    table = Table(title=f"{args.file.name}: {product}, mock mode, {outcome['seconds']} s")
    for column in ("bot", "fills", "approved", "rejected", "realized P&L", "unrealized P&L",
                   "open", "fees"):  # fmt: skip
        table.add_column(column)
    for bot in outcome["bots"]:
        table.add_row(
            bot["bot_id"], str(bot["fills"]), str(bot["approved"]), str(bot["rejected"]),
            bot["realized_pnl"], bot["unrealized_pnl"] or "no price", bot["open_quantity"],
            bot["fees_paid"],
        )  # fmt: skip
    console.print(table)
    return 0
