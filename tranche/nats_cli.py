"""``tranche nats provision``: create or update every stream and bucket as the admin user;
``tranche nats passwords``: fresh passwords for every NATS user as ``.env`` lines.

Services run with users that may not create streams (deploy/nats/permissions.conf); this step
runs before them: in the embedded stack, as the compose ``provision`` service and as the
Kubernetes Job. It reads the same settings as a service (``TRANCHE_NATS_URL``,
``TRANCHE_NATS_USER``, ``TRANCHE_NATS_PASSWORD``, ``TRANCHE_STREAM_REPLICAS``) and is safe to
run again: an existing stream is brought up to date, its messages kept.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from shared.settings import ServiceSettings, load
from shared.signing import new_key_pair, one_line
from shared.streams import ensure_streams
from tranche import credentials


async def provision(
    nats_url: str, auth: dict[str, str], replicas: int = 1, wait_s: float = 30
) -> None:
    """Create or update the streams and buckets; waits up to ``wait_s`` for the server."""
    import nats

    nc = await asyncio.wait_for(
        nats.connect(
            nats_url,
            name="tranche-provision",
            connect_timeout=2,
            reconnect_time_wait=1,
            max_reconnect_attempts=-1,
            **auth,
        ),
        wait_s,
    )
    try:
        await ensure_streams(nc.jetstream(), replicas=replicas)
    finally:
        await nc.close()


def cmd_provision(args: argparse.Namespace) -> int:
    settings = load(ServiceSettings, service="provision")
    try:
        asyncio.run(
            provision(settings.nats_url, settings.nats_auth, settings.stream_replicas, args.wait)
        )
    except Exception as error:  # one sentence, whatever nats-py raised
        print(
            f"cannot provision the streams on {settings.nats_url} as "
            f"{settings.nats_user or 'no user'}: {type(error).__name__} {error}".strip(),
            file=sys.stderr,
        )
        return 1
    print(f"streams and buckets ready on {settings.nats_url} ({settings.stream_replicas} replicas)")
    return 0


def cmd_passwords(args: argparse.Namespace) -> int:
    """Fresh passwords for every NATS user and safety's signing key pair, as ``.env`` lines
    (docker compose reads them)."""
    for name, value in credentials.server_env(credentials.new_passwords()).items():
        print(f"{name}={value}")
    # Safety's signing key pair (shared/signing.py): the private key for safety only.
    private, public = one_line(new_key_pair()[0])
    print(f"TRANCHE_SIGNING_KEY={private}")
    print(f"TRANCHE_SIGNING_PUBLIC_KEY={public}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("nats", help="NATS administration (provision the streams)")
    actions = group.add_subparsers(dest="nats_command", required=True)
    run = actions.add_parser("provision", help="create or update every stream as the admin user")
    run.add_argument("--wait", type=float, default=30, help="seconds to wait for the server")
    run.set_defaults(run=cmd_provision)
    passwords = actions.add_parser(
        "passwords", help="print a fresh password per NATS user as .env lines (docker compose)"
    )
    passwords.set_defaults(run=cmd_passwords)
