"""``tranche nats provision``: create or update every stream and bucket as the admin user;
``tranche nats passwords``: fresh passwords for every NATS user as ``.env`` lines;
``tranche nats pub SUBJECT PAYLOAD`` and ``tranche nats req SUBJECT PAYLOAD``: what the NATS CLI's
``nats pub`` and ``nats req`` do, as the operator user, for those without the NATS CLI.

Services run with users that may not create streams (deploy/nats/permissions.conf); this step
runs before them: in the embedded stack, as the compose ``provision`` service and as the
Kubernetes Job. It reads the same settings as a service (``TRANCHE_NATS_URL``,
``TRANCHE_NATS_USER``, ``TRANCHE_NATS_PASSWORD``, ``TRANCHE_STREAM_REPLICAS``) and is safe to
run again: an existing stream is brought up to date, its messages kept.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from shared.settings import ServiceSettings, load
from shared.signing import new_key_pair, one_line
from shared.streams import NO_PEERS_FOR_PLACEMENT, ensure_streams
from tranche import credentials


async def provision(
    nats_url: str, auth: dict[str, str], replicas: int = 1, wait_s: float = 30
) -> None:
    """Create or update the streams and buckets; waits up to ``wait_s`` for the server and for
    its JetStream to answer."""
    import nats

    deadline = asyncio.get_running_loop().time() + wait_s
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
        await _until_jetstream_answers(ensure_streams, nc.jetstream(), replicas, deadline)
    finally:
        await nc.close()


async def _until_jetstream_answers(ensure, js, replicas: int, deadline: float) -> None:
    """Run ``ensure`` (safe to run again) until JetStream answers: a cluster that has just
    started has no meta leader for a while, and its API requests time out or answer 503; so do
    a lone node's until its peers come. Anything else, and that past ``deadline``, is raised."""
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.errors import BadRequestError, ServiceUnavailableError

    loop = asyncio.get_running_loop()
    while True:
        try:
            await ensure(js, replicas=replicas)
            return
        except (NatsTimeout, NoRespondersError, ServiceUnavailableError, BadRequestError) as error:
            # A cluster just formed also refuses a replicated stream until it knows its peers
            # are online ("no suitable peers for placement, peer offline"); any other bad
            # request is a real one.
            transient = not isinstance(error, BadRequestError) or (
                error.err_code == NO_PEERS_FOR_PLACEMENT
            )
            if not transient or loop.time() >= deadline:
                raise
            await asyncio.sleep(1)


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
    """Fresh passwords for every NATS user, safety's signing key pair and the executor's, as
    ``.env`` lines (docker compose reads them)."""
    for name, value in credentials.server_env(credentials.new_passwords()).items():
        print(f"{name}={value}")
    # The two signing key pairs (shared/signing.py): each private key for its service only.
    for private_name, public_name in (
        ("TRANCHE_SIGNING_KEY", "TRANCHE_SIGNING_PUBLIC_KEY"),  # safety's
        ("TRANCHE_ORDER_SIGNING_KEY", "TRANCHE_ORDER_SIGNING_PUBLIC_KEY"),  # the executor's
    ):
        private, public = one_line(new_key_pair()[0])
        print(f"{private_name}={private}")
        print(f"{public_name}={public}")
    return 0


def cmd_pub(args: argparse.Namespace) -> int:
    """``nats pub``: one core-NATS message, no headers (a stream on the subject stores it)."""

    async def publish() -> None:
        nc = await credentials.operator_connect(args.nats_url)
        try:
            await nc.publish(args.subject, args.payload.encode())
            await nc.flush(timeout=args.timeout)
        finally:
            await nc.close()

    return _run(args, publish(), f"published {len(args.payload.encode())} bytes on {args.subject}")


def cmd_req(args: argparse.Namespace) -> int:
    """``nats req``: one request; the reply's payload is printed as it came."""
    answer: list[bytes] = []

    async def request() -> None:
        nc = await credentials.operator_connect(args.nats_url)
        try:
            reply = await nc.request(args.subject, args.payload.encode(), timeout=args.timeout)
            answer.append(reply.data)
        finally:
            await nc.close()

    code = _run(args, request(), None)
    if answer:
        print(answer[0].decode(errors="replace"))
    return code


def _run(args: argparse.Namespace, work, said: str | None) -> int:
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout

    try:
        asyncio.run(work)
    except NoRespondersError:
        print(f"nobody answers on {args.subject}: is the stack running?", file=sys.stderr)
        return 1
    except (NatsTimeout, TimeoutError):
        print(f"no answer on {args.subject} within {args.timeout:g} s", file=sys.stderr)
        return 1
    except OSError as error:  # operator_connect's one sentence
        print(error, file=sys.stderr)
        return 1
    if said:
        print(said)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser(
        "nats", help="NATS administration (provision the streams) and pub/req without the NATS CLI"
    )
    actions = group.add_subparsers(dest="nats_command", required=True)
    run = actions.add_parser("provision", help="create or update every stream as the admin user")
    run.add_argument("--wait", type=float, default=30, help="seconds to wait for the server")
    run.set_defaults(run=cmd_provision)
    passwords = actions.add_parser(
        "passwords", help="print a fresh password per NATS user as .env lines (docker compose)"
    )
    passwords.set_defaults(run=cmd_passwords)
    default_url = os.environ.get("TRANCHE_NATS_URL", "nats://127.0.0.1:4250")
    for name, run_it, what in (
        ("pub", cmd_pub, "publish one message as the operator (what `nats pub` does)"),
        ("req", cmd_req, "send one request as the operator and print the reply (`nats req`)"),
    ):
        command = actions.add_parser(name, help=what)
        command.add_argument("subject")
        command.add_argument("payload", nargs="?", default="")
        command.add_argument("--nats-url", default=default_url)
        command.add_argument("--timeout", type=float, default=3.0, help="seconds")
        command.set_defaults(run=run_it)
