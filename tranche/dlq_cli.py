"""``tranche dlq list [--service S]`` and ``tranche dlq replay ID``: dead letters an operator can
read and, after the fix, send again.

``list`` reads the ``TRANCHE_DLQ`` stream (as the operator user) and shows each letter with its
id, service, original subject and every reason. ``replay`` publishes the refused message again,
as it was sent, to its original subject, with ``Nats-Msg-Id`` = ``replay-<letter id>``: read
back whole from its own stream while it is still there (so a payload over the letter's 100,000
bytes and headers such as safety's signature come back exact), else from the letter's copy of
its payload and headers. A letter whose payload was cut and whose original is gone is refused
rather than sent in part. It records who replayed it and when as a ``tranche.dlq.replays``
message in the same stream: the audit trail, and what makes a second ``replay`` of the same
letter a no-op that says when it was done (``--again`` sends it anyway). Every handler is
idempotent, so a replayed message whose effect is already stored changes nothing.

Publishing onto another service's subject is a repair only ``admin`` may make (the operator user
may not publish order events, DESIGN.md promise 3): ``replay`` logs in as ``admin``
(``TRANCHE_NATS_USER``/``TRANCHE_NATS_PASSWORD``, or the embedded stack's admin password).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.contracts import DeadLetter
from shared.streams import DLQ

DEFAULT_NATS_URL = "nats://127.0.0.1:4250"
REPLAYS_SUBJECT = "tranche.dlq.replays"


@dataclass(frozen=True)
class Replay:
    """The audit record of one replay (a JSON message on ``tranche.dlq.replays``)."""

    letter_id: str
    subject: str
    replayed_at: str
    replayed_by: str
    replay_message_id: str


async def _stream_messages(nc) -> list[tuple[str, bytes]]:
    from nats.js.errors import NotFoundError

    js = nc.jetstream()
    info = await js.stream_info(DLQ.name)
    found = []
    for sequence in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
        try:
            message = await js.get_msg(DLQ.name, sequence)
        except NotFoundError:  # deleted or aged out
            continue
        found.append((message.subject, message.data or b""))
    return found


async def read_letters(nc, service: str | None = None) -> tuple[list[DeadLetter], list[Replay]]:
    """Every dead letter (of ``service``, if given), oldest first, and every replay record."""
    letters, replays = [], []
    for subject, data in await _stream_messages(nc):
        if subject == REPLAYS_SUBJECT:
            replays.append(Replay(**json.loads(data)))
            continue
        try:
            letter = DeadLetter.model_validate_json(data)
        except ValueError:
            continue  # not a letter this version can read; `nats stream get` still shows it
        if service is None or letter.service == service:
            letters.append(letter)
    return letters, replays


class NotReplayable(LookupError):
    """The letter cannot be sent again as it was: only part of it is left."""


def _own_headers(headers: dict[str, str] | None) -> dict[str, str]:
    return {name: value for name, value in (headers or {}).items() if not name.startswith("Nats-")}


async def original_of(nc, letter: DeadLetter) -> tuple[bytes, dict[str, str]]:
    """The refused message's payload and own headers, as it was sent."""
    from nats.js.errors import NotFoundError

    kept = letter.raw_payload()
    if letter.stream and letter.stream_sequence:
        try:
            stored = await nc.jetstream().get_msg(letter.stream, letter.stream_sequence)
        except NotFoundError:  # aged out or deleted: the letter's copy has to do
            stored = None
        if (
            stored is not None
            and stored.subject == letter.subject
            and (stored.data or b"").startswith(kept)
        ):
            return stored.data or b"", _own_headers(stored.headers)
    if letter.truncated:
        raise NotReplayable(
            f"{letter.message_id} kept only the first {len(kept):,} of {letter.payload_bytes:,} "
            f"bytes and the original is no longer in {letter.stream or 'its stream'}; "
            "it cannot be replayed whole"
        )
    return kept, _own_headers(letter.headers)


async def replay(nc, letter_id: str, who: str, again: bool = False) -> tuple[Replay, bool]:
    """Publish the letter's original payload to its original subject; returns the audit record
    and whether it was sent now (False: it had been replayed before and ``again`` is off)."""
    letters, replays = await read_letters(nc)
    letter = next((item for item in letters if item.message_id == letter_id), None)
    if letter is None:
        raise LookupError(f"no dead letter with id {letter_id!r} in {DLQ.name}")
    done = [item for item in replays if item.letter_id == letter_id]
    if done and not again:
        return done[-1], False
    payload, headers = await original_of(nc, letter)
    js = nc.jetstream()
    message_id = f"replay-{letter_id}" + (f"-{len(done)}" if done else "")
    await js.publish(letter.subject, payload, headers=headers | {"Nats-Msg-Id": message_id})
    record = Replay(
        letter_id=letter_id,
        subject=letter.subject,
        replayed_at=datetime.now(UTC).isoformat(),
        replayed_by=who,
        replay_message_id=message_id,
    )
    await js.publish(
        REPLAYS_SUBJECT,
        json.dumps(vars(record)).encode(),
        headers={"Nats-Msg-Id": f"audit-{message_id}"},
        stream=DLQ.name,
    )
    return record, True


def register(commands: argparse._SubParsersAction) -> None:
    dlq = commands.add_parser("dlq", help="dead letters: list them, replay one after a fix")
    actions = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = actions.add_parser("list", help="every dead letter with its reasons")
    listing.add_argument("--service", help="only this service's letters (signal, ledger, ...)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=cmd_list)
    again = actions.add_parser("replay", help="publish a dead letter to its subject again")
    again.add_argument("letter_id", help="the id `tranche dlq list` shows")
    again.add_argument("--again", action="store_true", help="even if it was replayed before")
    again.set_defaults(run=cmd_replay)
    for sub in (listing, again):
        sub.add_argument("--nats-url", default=os.environ.get("TRANCHE_NATS_URL", DEFAULT_NATS_URL))


def _who() -> str:
    try:
        return getpass.getuser()[:64] or "operator"
    except Exception:  # no user name in some containers
        return "operator"


def cmd_list(args: argparse.Namespace) -> int:
    from tranche.credentials import operator_connect

    async def run() -> tuple[list[DeadLetter], list[Replay]]:
        nc = await operator_connect(args.nats_url)
        try:
            return await read_letters(nc, args.service)
        finally:
            await nc.close()

    try:
        letters, replays = asyncio.run(run())
    except Exception as error:
        print(f"cannot read the dead letters: {error}", file=sys.stderr)
        return 2
    replayed = {item.letter_id: item for item in replays}
    if args.json:
        rows = [
            letter.model_dump(mode="json", exclude={"payload_base64"})
            | {
                "replayed": vars(replayed[letter.message_id])
                if letter.message_id in replayed
                else None
            }
            for letter in letters
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not letters:
        print("no dead letters" + (f" of {args.service}" if args.service else ""))
        return 0
    for letter in letters:
        print(f"{letter.message_id}")
        print(f"  service {letter.service}  subject {letter.subject}  at {letter.time.isoformat()}")
        for reason in letter.reasons:
            print(f"  {reason.code}: {reason.message}")
        if letter.message_id in replayed:
            done = replayed[letter.message_id]
            print(f"  replayed {done.replayed_at} by {done.replayed_by}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from tranche.credentials import operator_connect

    async def run() -> tuple[Replay, bool]:
        nc = await operator_connect(args.nats_url, user="admin")
        try:
            return await replay(nc, args.letter_id, _who(), again=args.again)
        finally:
            await nc.close()

    try:
        record, sent = asyncio.run(run())
    except LookupError as error:
        print(str(error).strip("'\""), file=sys.stderr)
        return 1
    except Exception as error:
        print(f"cannot replay {args.letter_id}: {error}", file=sys.stderr)
        return 2
    if sent:
        print(f"replayed {record.letter_id} to {record.subject} as {record.replay_message_id}")
    else:
        print(
            f"{record.letter_id} was already replayed at {record.replayed_at} by "
            f"{record.replayed_by}; nothing sent (use --again to send it once more)"
        )
    return 0
