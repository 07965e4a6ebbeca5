"""``tranche ledger rebuild [--apply]``: positions recomputed from the fills, differences listed."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table


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
