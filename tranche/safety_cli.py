"""The operator's safety commands, added to ``tranche`` by :func:`register`.

tranche halt [BOT]           kill switch: no approvals for BOT (or every bot) until resumed
tranche resume [BOT]         after a halt or a tripped breaker
tranche flatten BOT          exit BOT's whole position (the bot goes to reducing), wait until flat
tranche mode mock|production switch approvals at once (production needs the executor's opt-in)
tranche limits reset BOT     release BOT's mock counters and cooldowns (refused in production)
tranche decisions BOT        BOT's decisions with every reason and the counters they saw

Commands travel as ``tranche.safety.control`` requests over NATS (NATS permissions decide who
may send them, and that only safety may answer); an answer counts only with safety's signature
(shared/signing.py), checked with its public key. ``decisions`` reads safety's HTTP API.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
import uuid

import httpx

from shared import subjects
from shared.contracts import PositionUpdate, SafetyCommand, SafetyCommandResult
from shared.signing import SigningKeyError, Verifier
from tranche.credentials import operator_connect, signing_public_key

DEFAULT_NATS_URL = "nats://127.0.0.1:4250"
DEFAULT_SAFETY_URL = "http://127.0.0.1:8102"


def _operator() -> str:
    try:
        return getpass.getuser()[:64] or "operator"
    except Exception:  # no user name in some containers
        return "operator"


def send(nats_url: str, command: SafetyCommand, timeout: float = 5) -> SafetyCommandResult:
    """Send one command to safety and return its answer, once its signature shows that safety
    gave it (raises ``ConnectionError`` when no safety instance answers or the answer is not
    safety's: "halted" is said only on safety's own word)."""
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout

    public_key = signing_public_key()
    if public_key is None:
        raise ConnectionError(
            "cannot confirm safety's answer without its public key: set "
            "TRANCHE_SIGNING_PUBLIC_KEY or TRANCHE_SIGNING_PUBLIC_KEY_FILE, or TRANCHE_DATA_DIR "
            "to the data directory of the running tranche up"
        )
    try:
        verifier = Verifier(public_key)
    except SigningKeyError as error:
        raise ConnectionError(str(error)) from None

    async def request() -> SafetyCommandResult:
        nc = await operator_connect(nats_url)
        try:
            reply = await nc.request(
                subjects.SAFETY_CONTROL, command.model_dump_json().encode(), timeout=timeout
            )
        finally:
            await nc.close()
        if not verifier.valid(reply.subject, reply.data, reply.headers):
            raise ConnectionError(
                f"an answer on {subjects.SAFETY_CONTROL} was not signed by safety: nothing is "
                "confirmed (check tranche status or safety's GET /states)"
            )
        return SafetyCommandResult.model_validate_json(reply.data)

    try:
        return asyncio.run(request())
    except (NoRespondersError, NatsTimeout):
        raise ConnectionError(
            f"no safety service answered on {subjects.SAFETY_CONTROL}: is it running?"
        ) from None
    except ConnectionError:
        raise  # operator_connect's one sentence
    except OSError as error:
        raise ConnectionError(f"cannot reach NATS at {nats_url}: {error}") from None


def _command(args: argparse.Namespace, name: str, **fields: object) -> int:
    command = SafetyCommand(
        command=name,
        command_id=str(uuid.uuid4()),
        reason=getattr(args, "reason", "") or "",
        operator=args.operator,
        **fields,
    )
    try:
        result = send(args.nats_url, command)
    except ConnectionError as error:
        print(error, file=sys.stderr)
        return 1
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(f"{result.code}: {result.message}")
    return 0 if result.ok else 1


def cmd_halt(args: argparse.Namespace) -> int:
    return _command(args, "halt", bot_id=args.bot, cancel_stops=args.cancel_stops)


def cmd_resume(args: argparse.Namespace) -> int:
    return _command(args, "resume", bot_id=args.bot)


def held_by(nats_url: str, bot_id: str) -> PositionUpdate | None:
    """The bot's newest position from the ``tranche_positions`` bucket (``None``: never had
    one)."""
    from nats.js.errors import KeyNotFoundError

    async def read() -> PositionUpdate | None:
        nc = await operator_connect(nats_url)
        try:
            bucket = await nc.jetstream().key_value(subjects.POSITIONS_BUCKET)
            entry = await bucket.get(bot_id)
            return PositionUpdate.model_validate_json(entry.value) if entry.value else None
        except KeyNotFoundError:
            return None
        finally:
            await nc.close()

    return asyncio.run(read())


def wait_until_flat(nats_url: str, bot_id: str, wait_s: float, poll_s: float = 0.5) -> str | None:
    """Wait up to ``wait_s`` for the bot's position to be flat; ``None`` when it is, else what it
    still holds."""
    deadline = time.monotonic() + wait_s
    while True:
        position = held_by(nats_url, bot_id)
        if position is None or position.status != "open" or position.quantity == 0:
            return None
        if time.monotonic() >= deadline:
            return f"{position.quantity} {position.product_id} ({position.mode})"
        time.sleep(poll_s)


def cmd_flatten(args: argparse.Namespace) -> int:
    """Ask safety to flatten, then (unless ``--wait 0``) report when the position is flat."""
    code = _command(args, "flatten", bot_id=args.bot)
    if code != 0 or args.wait <= 0 or args.json:
        return code
    try:
        still = wait_until_flat(args.nats_url, args.bot, args.wait)
    except ConnectionError as error:
        print(error, file=sys.stderr)
        return 1
    if still is None:
        print(f"FLAT: bot {args.bot} holds nothing; it stays reducing until resumed")
        return 0
    print(
        f"NOT_FLAT_YET: bot {args.bot} still holds {still} after {args.wait:g} s; the signal "
        "service asks again at every tick: is its market feed running, is the bot or the system "
        f"halted? (tranche decisions {args.bot})"
    )
    return 1


def cmd_mode(args: argparse.Namespace) -> int:
    return _command(args, "mode", mode=args.mode)


def cmd_limits_reset(args: argparse.Namespace) -> int:
    return _command(args, "limits_reset", bot_id=args.bot)


def cmd_decisions(args: argparse.Namespace) -> int:
    try:
        response = httpx.get(
            f"{args.safety_url}/decisions",
            params={"bot": args.bot, "limit": args.limit},
            timeout=5,
        )
    except httpx.HTTPError as error:
        print(f"cannot reach safety at {args.safety_url}: {error}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"safety answered {response.status_code}: {response.text[:300]}", file=sys.stderr)
        return 1
    rows = response.json()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no decisions for {args.bot}")
    for row in rows:
        verdict = "approved" if row["approved"] else "rejected"
        counters = " ".join(f"{k}={v}" for k, v in row.get("counters", {}).items())
        print(
            f"{row['market_time']}  {row['mode']:<10} {row['action']:<5} {verdict:<8} "
            f"{row.get('order_status', '')}  [{counters}]"
        )
        for reason in row["reasons"] + row.get("adjustments", []):
            print(f"    {reason['code']}: {reason['message']}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add halt, resume, flatten, mode, limits reset and decisions to ``tranche``'s parser."""

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--nats-url", default=os.environ.get("TRANCHE_NATS_URL", DEFAULT_NATS_URL)
        )
        parser.add_argument("--operator", default=_operator(), help="who asks (for the audit)")
        parser.add_argument("--json", action="store_true")

    halt = commands.add_parser("halt", help="kill switch: halt a bot, or everything")
    halt.add_argument("bot", nargs="?", help="a bot id; none halts every bot")
    halt.add_argument("--reason", default="")
    halt.add_argument(
        "--cancel-stops",
        action="store_true",
        help="cancel the protective stops resting on the exchange too (a halt keeps them)",
    )
    common(halt)
    halt.set_defaults(run=cmd_halt)

    resume = commands.add_parser("resume", help="resume a bot, or everything")
    resume.add_argument("bot", nargs="?")
    resume.add_argument("--reason", default="")
    common(resume)
    resume.set_defaults(run=cmd_resume)

    flatten = commands.add_parser("flatten", help="exit a bot's whole position")
    flatten.add_argument("bot")
    flatten.add_argument("--reason", default="")
    flatten.add_argument(
        "--wait", type=float, default=60.0,
        help="seconds to wait for the position to be flat (0: do not wait)",
    )  # fmt: skip
    common(flatten)
    flatten.set_defaults(run=cmd_flatten)

    mode = commands.add_parser("mode", help="switch approvals to mock or production at once")
    mode.add_argument("mode", choices=["mock", "production"])
    common(mode)
    mode.set_defaults(run=cmd_mode)

    limits = commands.add_parser("limits", help="safety limits")
    limits_commands = limits.add_subparsers(dest="limits_command", required=True)
    reset = limits_commands.add_parser("reset", help="reset a bot's mock counters")
    reset.add_argument("bot")
    common(reset)
    reset.set_defaults(run=cmd_limits_reset)

    decisions = commands.add_parser("decisions", help="a bot's decisions with their reasons")
    decisions.add_argument("bot")
    decisions.add_argument("--limit", type=int, default=20)
    decisions.add_argument(
        "--safety-url", default=os.environ.get("TRANCHE_SAFETY_URL", DEFAULT_SAFETY_URL)
    )
    decisions.add_argument("--json", action="store_true")
    decisions.set_defaults(run=cmd_decisions)
