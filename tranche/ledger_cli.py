"""``tranche ledger rebuild [--apply]``: positions recomputed from the fills, differences listed.
``tranche ledger history BOT [--csv FILE]``: the bot's closed positions from the ledger's HTTP API
(entries, exits, fees, realized P&L, duration), or their fills as CSV for a tax tool."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

DEFAULT_LEDGER_URL = "http://127.0.0.1:8104"


def register(commands: argparse._SubParsersAction) -> None:
    ledger = commands.add_parser("ledger", help="the ledger's maintenance commands")
    actions = ledger.add_subparsers(dest="ledger_command", required=True)
    rebuild = actions.add_parser(
        "rebuild",
        help="recompute every position from the fills and report differences "
        "(reads the ledger's database: TRANCHE_DATABASE_URL / TRANCHE_DATA_DIR)",
    )
    rebuild.add_argument("--apply", action="store_true", help="store the recomputed positions")
    rebuild.add_argument("--json", action="store_true")
    rebuild.set_defaults(run=cmd_rebuild)
    history = actions.add_parser(
        "history", help="a bot's closed positions: entries, exits, fees, realized P&L, duration"
    )
    history.add_argument("bot_id")
    history.add_argument("--mode", choices=["mock", "production"], default="mock")
    history.add_argument("--csv", metavar="FILE", help="write the fills as CSV ('-': stdout)")
    history.add_argument("--json", action="store_true")
    history.add_argument(
        "--url",
        default=os.environ.get("TRANCHE_LEDGER_URL", DEFAULT_LEDGER_URL),
        help="the ledger's HTTP address",
    )
    history.set_defaults(run=cmd_history)


def cmd_history(args: argparse.Namespace) -> int:
    import httpx

    path = f"/positions/{args.bot_id}/history" + (".csv" if args.csv else "")
    try:
        response = httpx.get(args.url + path, params={"mode": args.mode}, timeout=10)
    except httpx.HTTPError as error:
        print(f"cannot reach the ledger at {args.url}: {error}", file=sys.stderr)
        return 2
    if response.status_code != 200:
        detail = (
            response.json().get("detail")
            if response.headers.get("content-type", "").startswith("application/json")
            else response.text
        )
        print(f"ledger: {detail}", file=sys.stderr)
        return 1
    if args.csv:
        if args.csv == "-":
            sys.stdout.write(response.text)
        else:
            Path(args.csv).write_text(response.text)
            print(f"wrote {args.csv}")
        return 0
    history = response.json()
    if args.json:
        print(json.dumps(history, indent=2))
        return 0
    if not history["positions"]:
        print(f"{args.bot_id} has no closed position in {args.mode} mode")
        return 0
    table = Table(title=f"{args.bot_id} ({history['product_id']}, {args.mode}): closed positions")
    for column in ("#", "opened", "closed", "duration", "entries", "exits", "exit reason", "fees",
                   "dust", "realized P&L"):  # fmt: skip
        table.add_column(column, no_wrap=column == "exit reason")
    for p in history["positions"]:
        table.add_row(
            str(p["number"]), p["opened_at"], p["closed_at"] or "", f"{p['duration_s']} s",
            str(len(p["entries"])), str(len(p["exits"])), p.get("exit_reason") or "",
            p["fees_paid"], p["dust"], p["realized_pnl"],
        )  # fmt: skip
    Console().print(table)
    print(f"realized P&L of these positions: {history['realized_pnl']}")
    for a in history["adjustments"]:
        print(
            f"adjustment {a['entry_id']} ({a['trade_type']} of trade {a['trade_id']}): "
            f"quantity {a['quantity_change']}, realized P&L {a['realized_pnl_change']}"
        )
    return 0


async def read_bots(catalog, nats_url: str, data_dir: Path) -> None:
    """Every bot in the ``tranche_bots`` bucket into ``catalog`` (removed ones included), read
    as the ledger's NATS user (what the ledger itself may read)."""
    from shared.bots import read_bucket
    from tranche.credentials import operator_connect

    nc = await operator_connect(nats_url, data_dir, user="ledger")
    try:
        for record, revision in (await read_bucket(nc)).values():
            await catalog.apply(record, revision)
    finally:
        await nc.close()


def cmd_rebuild(args: argparse.Namespace) -> int:
    from services.ledger.config import LedgerSettings
    from services.ledger.rebuild import rebuild
    from services.ledger.schema import migrate
    from shared.bots import LiveCatalog
    from shared.catalog import load_catalog
    from shared.db import make_engine
    from shared.settings import load

    settings = load(LedgerSettings)
    catalog = LiveCatalog(load_catalog(settings.config_file))
    try:
        asyncio.run(asyncio.wait_for(read_bots(catalog, settings.nats_url, settings.data_dir), 15))
    except Exception as error:  # the file's bots still rebuild; say what is missing
        why = str(error) if isinstance(error, ConnectionError) else f"{type(error).__name__}"
        print(f"bots created at run time are not included: {why}", file=sys.stderr)
    engine = make_engine(settings.db_url)
    migrate(engine)
    found = rebuild(
        engine,
        catalog,
        None,
        settings.exit_allocation,
        apply=args.apply,
    )
    engine.dispose()
    if args.json:
        print(json.dumps([asdict(item) for item in found], indent=2))
    elif not found:
        Console().print("every stored position equals the one recomputed from its fills")
    else:
        table = Table(title="stored vs recomputed" + (" (now fixed)" if args.apply else ""))
        for column in ("bot", "mode", "field", "stored", "recomputed"):
            table.add_column(column)
        for item in found:
            table.add_row(item.bot_id, item.mode, item.field, item.stored, item.recomputed)
        Console().print(table)
    return 1 if found and not args.apply else 0
