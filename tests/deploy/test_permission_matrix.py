"""The permission matrix of docs/deploy.md, cell by cell, on a real NATS server running
deploy/nats/tranche-auth.conf: every user against every privileged action, each asserted
allowed or denied. The table is the one source; change the table and the config together.

Actions (the table's second column):
``publish S``     a message on subject S (with a reply inbox: JetStream API calls are publishes);
``api S``         the same, for a JetStream API subject;
``subscribe S [queue Q]``  a subscription (in queue group Q);
``answer S [queue Q]``     subscribe and answer an admin's request on S: allowed when it arrives.
A publish or subscription is denied when the server says "permissions violation" for it.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass

import nats
import pytest
from nats.aio.client import Client

from tests.support.nats_server import ROOT
from tests.support.nats_users import As
from tranche import credentials

DEPLOY_DOC = ROOT / "docs" / "deploy.md"


@dataclass(frozen=True)
class Cell:
    what: str
    action: str
    allowed: bool


def matrix() -> dict[str, list[Cell]]:
    """The table under "### Permission matrix": one row per action, one column per user."""
    text = DEPLOY_DOC.read_text().split("### Permission matrix", 1)[1]
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    users = header[2:]
    assert sorted(users) == sorted(credentials.USERS), header
    table: dict[str, list[Cell]] = {user: [] for user in users}
    for line in lines[2:]:
        what, action, *cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells and all(cell in ("yes", "no") for cell in cells), line
        for user, cell in zip(users, cells, strict=True):
            table[user].append(Cell(what, action.strip("`"), cell == "yes"))
    return table


MATRIX = matrix()

# Bodies for the API calls whose body matters once allowed (admin): harmless otherwise.
BODIES = {
    "$JS.API.STREAM.UPDATE.KV_tranche_bots": {
        "name": "KV_tranche_bots",
        "subjects": ["$KV.tranche_bots.>"],
        "republish": {"src": "$KV.tranche_bots.x", "dest": "tranche.orders.approved.bot-1"},
    },
}


def _parse(action: str) -> tuple[str, str, str | None]:
    kind, subject, *rest = action.split()
    queue = rest[1] if rest[:1] == ["queue"] else None
    return kind, subject, queue


def _violation(kind: str, subject: str, queue: str | None) -> str:
    if kind in ("publish", "api"):
        return f'permissions violation for publish to "{subject.lower()}"'
    text = f'permissions violation for subscription to "{subject.lower()}"'
    return text + (f' using queue "{queue.lower()}"' if queue else "")


async def _answers(users: As, nc: Client, subject: str, queue: str | None) -> bool:
    """Whether ``nc`` can answer an admin's request on ``subject`` (in ``queue``)."""

    async def answer(msg) -> None:
        await msg.respond(b"answered")

    sub = await nc.subscribe(subject, queue=queue or "", cb=answer)
    await nc.flush()
    admin = await users.connect("admin")
    try:
        reply = await admin.request(subject, b"{}", timeout=1)
        return reply.data == b"answered"
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        return False
    finally:
        await admin.close()
        await sub.unsubscribe()


@pytest.mark.parametrize("user", list(MATRIX))
async def test_the_permission_matrix_holds(users: As, user: str) -> None:
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error).lower())

    nc = await users.connect(user, error_cb=on_error)
    inbox = nc.new_inbox()
    seen: dict[str, bool] = {}
    answers: list[Cell] = []
    for cell in MATRIX[user]:
        kind, subject, queue = _parse(cell.action)
        if kind == "answer":
            answers.append(cell)
        elif kind in ("publish", "api"):
            body = json.dumps(BODIES.get(subject, {})).encode()
            await nc.publish(subject, body, reply=inbox if kind == "api" else "")
        elif kind == "subscribe":
            await nc.subscribe(subject, queue=queue or "")
        else:
            raise AssertionError(f"unknown action {cell.action!r} in docs/deploy.md")
    await nc.flush()
    await asyncio.sleep(0.5)  # the server's -ERR for a refused action arrives after the PONG
    for cell in MATRIX[user]:
        kind, subject, queue = _parse(cell.action)
        if kind != "answer":
            seen[cell.action] = not any(_violation(kind, subject, queue) in e for e in errors)
    await nc.close()
    for cell in answers:
        kind, subject, queue = _parse(cell.action)
        answering = await users.connect(user)
        seen[cell.action] = await _answers(users, answering, subject, queue)
        await answering.close()
    wrong = [
        f"{cell.what} ({cell.action}): {'allowed' if seen[cell.action] else 'denied'}"
        for cell in MATRIX[user]
        if seen[cell.action] != cell.allowed
    ]
    assert not wrong, f"{user}: " + "; ".join(wrong)


def test_the_matrix_names_every_business_subject_and_user() -> None:
    actions = {cell.action for cell in MATRIX["admin"]}
    for family in ("approved", "rejected", "events"):
        assert f"publish tranche.orders.{family}.bot-1" in actions
    assert {"publish tranche.safety.events", "subscribe tranche.safety.control queue safety"} <= (
        actions
    )
    assert all(re.fullmatch(r"(publish|api|subscribe|answer) \S+( queue \S+)?", a) for a in actions)
