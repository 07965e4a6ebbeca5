"""Broker permissions on a real NATS server (deploy/nats/tranche-auth.conf): every service has
its own user, and only safety may publish an approval."""

from __future__ import annotations

import asyncio
import secrets
import string
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from shared.streams import ensure_streams
from tests.support.nats_server import ROOT, NatsServer

AUTH_CONFIG = ROOT / "deploy" / "nats" / "tranche-auth.conf"
USERS = ("signal", "safety", "executor", "ledger", "dashboard", "operator")


def password() -> str:
    # NATS parses an environment variable's value as a config value: one starting with a digit
    # or "-" is read as a number and fails. Letters first, then letters and digits.
    alphabet = string.ascii_letters + string.digits
    return secrets.choice(string.ascii_letters) + "".join(
        secrets.choice(alphabet) for _ in range(23)
    )


@pytest.fixture
def passwords() -> dict[str, str]:
    return {user: password() for user in USERS}


@pytest.fixture
def secured(tmp_path: Path, passwords: dict[str, str]) -> Iterator[NatsServer]:
    env = {f"TRANCHE_NATS_PASSWORD_{user.upper()}": pw for user, pw in passwords.items()}
    server = NatsServer(store_dir=tmp_path / "nats", config=AUTH_CONFIG, env=env).start()
    try:
        yield server
    finally:
        server.stop()


class As:
    """A connection as one user, remembering the errors the server sent it."""

    def __init__(self, server: NatsServer, passwords: dict[str, str]):
        self.server, self.passwords = server, passwords
        self.errors: list[str] = []

    async def connect(self, user: str) -> Client:
        async def on_error(error: Exception) -> None:
            self.errors.append(str(error))

        return await nats.connect(
            self.server.url,
            user=user,
            password=self.passwords[user],
            error_cb=on_error,
            max_reconnect_attempts=0,
        )


@pytest.fixture
async def users(secured: NatsServer, passwords: dict[str, str]) -> AsyncIterator[As]:
    who = As(secured, passwords)
    setup = await who.connect("safety")
    await ensure_streams(setup.jetstream())
    await setup.close()
    yield who


async def stored(nc: Client, stream: str) -> int:
    return (await nc.jetstream().stream_info(stream)).state.messages


async def test_only_safety_may_publish_an_approval(users: As) -> None:
    executor = await users.connect("executor")
    with pytest.raises((nats.errors.TimeoutError, nats.js.errors.APIError)):
        await executor.jetstream().publish("tranche.orders.approved.bot-1", b"{}", timeout=1)
    await asyncio.sleep(0.2)
    assert any("permissions violation" in e.lower() for e in users.errors)
    assert await stored(executor, "TRANCHE_ORDERS") == 0

    safety = await users.connect("safety")
    ack = await safety.jetstream().publish("tranche.orders.approved.bot-1", b"{}", timeout=2)
    assert ack.stream == "TRANCHE_ORDERS" and await stored(safety, "TRANCHE_ORDERS") == 1
    await executor.close()
    await safety.close()


@pytest.mark.parametrize("user", ["signal", "executor", "ledger", "dashboard", "operator"])
async def test_nobody_else_approves(users: As, user: str) -> None:
    nc = await users.connect(user)
    await nc.publish("tranche.orders.approved.bot-1", b"{}")
    await nc.flush()
    await asyncio.sleep(0.2)
    assert any("permissions violation" in e.lower() for e in users.errors), user
    await nc.close()


async def test_only_the_ledger_writes_the_positions_bucket(users: As) -> None:
    signal = await users.connect("signal")
    bucket = await signal.jetstream().key_value("tranche_positions")
    with pytest.raises((nats.errors.TimeoutError, nats.js.errors.APIError)):
        await bucket.put("bot-1", b"{}")
    ledger = await users.connect("ledger")
    revision = await (await ledger.jetstream().key_value("tranche_positions")).put("bot-1", b"{}")
    assert revision >= 1
    assert (await bucket.get("bot-1")).value == b"{}"  # everyone may read it
    await signal.close()
    await ledger.close()


async def test_the_operator_injects_signals_but_cannot_make_intents(users: As) -> None:
    operator = await users.connect("operator")
    js = operator.jetstream()
    assert (await js.publish("tranche.signals.inject.bot-1", b'{"side":"buy"}')).seq == 1
    with pytest.raises((nats.errors.TimeoutError, nats.js.errors.APIError)):
        await js.publish("tranche.intents.bot-1", b"{}", timeout=1)
    await operator.close()


async def test_a_wrong_password_is_refused(secured: NatsServer) -> None:
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error))

    with pytest.raises(Exception):  # noqa: B017 - nats-py's error type varies by version
        await nats.connect(
            secured.url, user="safety", password="guess", max_reconnect_attempts=0,
            allow_reconnect=False, error_cb=on_error,
        )  # fmt: skip
    assert any("authorization" in e.lower() for e in errors), errors


async def test_only_signal_writes_the_bots_bucket_and_announces_bot_changes(users: As) -> None:
    signal = await users.connect("signal")
    bucket = await signal.jetstream().key_value("tranche_bots")
    assert await bucket.create("bot-1", b"{}") >= 1
    ack = await signal.jetstream().publish("tranche.bots.changed", b"{}", timeout=2)
    assert ack.stream == "TRANCHE_BOTS"
    for user in ("executor", "ledger", "dashboard", "operator"):
        other = await users.connect(user)
        with pytest.raises((nats.errors.TimeoutError, nats.js.errors.APIError)):
            await (await other.jetstream().key_value("tranche_bots")).put("bot-1", b"{}")
        await other.close()
    assert (await bucket.get("bot-1")).revision == 1
    await signal.close()
