"""``tranche outbox replay --since TIME``: refill lost streams from the services' outboxes.

The databases, not the streams, are the record (DESIGN.md, promise 2). If NATS lost its stream
data (a deleted store, a disk failure, acknowledged writes lost before a sync), every message a
service sent is still a row in its outbox. This command re-publishes the rows staged at or after
``--since``, in their original order and with their original ``Nats-Msg-Id``: JetStream drops
the ones it still holds, and every consumer's idempotency drops those it had already handled.
Then restart the services so that they re-create their consumers on the refilled streams.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from shared.signing import Signer, SigningKeyError, signer_from
from tranche.credentials import ORDER_SIGNING_KEY, SECRETS_DIR, SIGNING_KEY

SERVICES = ("signal", "safety", "executor", "ledger")


def register(commands: argparse._SubParsersAction) -> None:
    outbox = commands.add_parser("outbox", help="the services' outboxes")
    actions = outbox.add_subparsers(dest="outbox_command", required=True)
    replay = actions.add_parser(
        "replay",
        help="re-publish outbox rows with their original message ids (after NATS lost streams)",
    )
    replay.add_argument(
        "--since",
        required=True,
        type=_aware_time,
        help="ISO 8601 time; rows staged at or after it (UTC if no offset)",
    )
    replay.add_argument(
        "--service",
        action="append",
        choices=SERVICES,
        help="whose outbox (repeatable; default: all four, flow order)",
    )
    replay.add_argument(
        "--database-url", help="one service's database (default: TRANCHE_DATA_DIR/<service>.db)"
    )
    replay.add_argument("--nats-url", default=os.environ.get("TRANCHE_NATS_URL"))
    replay.set_defaults(run=cmd_replay)


def _aware_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cmd_replay(args: argparse.Namespace) -> int:
    from shared.db import make_engine
    from shared.settings import ServiceSettings, load

    services = args.service or list(SERVICES)
    if args.database_url and len(services) != 1:
        print("--database-url names one database: give exactly one --service", file=sys.stderr)
        return 2
    total = 0
    for name in services:
        settings = load(ServiceSettings, service=name)
        url = args.database_url or settings.db_url
        nats_url = args.nats_url or settings.nats_url
        sign = None
        if name in SIGNERS:  # their readers believe only what each signed with its own key
            try:
                sign = signer_of(name, settings.data_dir).headers
            except SigningKeyError as error:
                print(f"{name}: cannot replay its outbox unsigned: {error}", file=sys.stderr)
                return 1
        engine = make_engine(url)
        try:
            sent = asyncio.run(
                _replay(
                    engine, nats_url, args.since, settings.stream_replicas, settings.nats_auth,
                    sign,
                )
            )  # fmt: skip
        except Exception as error:
            print(
                f"{name}: cannot replay its outbox: {type(error).__name__}: {error}",
                file=sys.stderr,
            )
            return 1
        finally:
            engine.dispose()
        print(f"{name}: re-published {sent} outbox messages staged since {args.since.isoformat()}")
        total += sent
    print(f"{total} in all; now restart the services so they re-create their consumers")
    return 0


SIGNERS = {
    "safety": ("TRANCHE_SIGNING_KEY", SIGNING_KEY),
    "executor": ("TRANCHE_ORDER_SIGNING_KEY", ORDER_SIGNING_KEY),
}
"""The services that sign their outbox (shared/signing.py): the variable of each one's private
key and the file ``tranche up`` keeps it in (tranche/credentials.py)."""


def signer_of(service: str, data_dir: Path) -> Signer:
    """``service``'s own key (safety's or the executor's): its variable or ``<variable>_FILE``,
    else the one ``tranche up`` keeps in the data dir."""
    variable, kept_name = SIGNERS[service]
    kept = data_dir / SECRETS_DIR / kept_name
    named = os.environ.get(f"{variable}_FILE")
    file = Path(named) if named else (kept if kept.is_file() else None)
    return signer_from(os.environ.get(variable), file, variable)


async def _replay(
    engine,
    nats_url: str,
    since: datetime,
    replicas: int,
    auth: dict[str, str],
    sign: Callable[[str, bytes], dict[str, str]] | None = None,
) -> int:
    from shared.bus import connect, outbox_publisher
    from shared.outbox import replay_since
    from shared.streams import ensure_streams

    # As the NATS admin (TRANCHE_NATS_USER/PASSWORD): it re-creates the streams first.
    nc = await connect(nats_url, "tranche-outbox-replay", None, None, **auth)
    try:
        await ensure_streams(nc.jetstream(), replicas=replicas)
        return await replay_since(engine, since, outbox_publisher(nc, sign=sign))
    finally:
        await nc.drain()
