"""Broker permissions on a real NATS server (deploy/nats/tranche-auth.conf): every service has
its own user, only safety may publish an approval, and each user may use only the JetStream API
calls its own consumers and buckets need (nobody but admin creates or deletes a stream)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import nats
import pytest

from shared import streams
from shared.service import Service, StartupError
from shared.settings import ServiceSettings
from shared.streams import Consumer, ensure_streams
from tests.support.nats_server import ROOT, NatsServer
from tests.support.nats_users import As, denied, stored
from tranche import credentials

PERMISSIONS = ROOT / "deploy" / "nats" / "permissions.conf"
USERS = credentials.USERS
CONSUMERS = [value for value in vars(streams).values() if isinstance(value, Consumer)]


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


def rules_of(user: str) -> str:
    """The text of one user's block in permissions.conf."""
    blocks = re.split(r"\n\s*\{\s*\n", PERMISSIONS.read_text())
    (block,) = [b for b in blocks if re.search(rf"^\s*user: {user},", b, re.M)]
    return block


@pytest.mark.parametrize("consumer", CONSUMERS, ids=lambda c: c.durable)
def test_each_durable_consumer_is_usable_by_its_service_only(consumer: Consumer) -> None:
    owner = consumer.durable.split("-")[0]  # consumer names start with their service
    api = f"$JS.API.CONSUMER.MSG.NEXT.{consumer.stream.name}.{consumer.durable}"
    ack = f"$JS.ACK.{consumer.stream.name}.{consumer.durable}.>"
    for user in (*credentials.SERVICE_USERS, "operator"):
        listed = f'"{api}"' in rules_of(user) and f'"{ack}"' in rules_of(user)
        assert listed == (user == owner), (user, consumer.durable)


async def test_the_dashboard_cannot_delete_a_stream_or_publish_an_order_event(users: As) -> None:
    dashboard = await users.connect("dashboard")
    js = dashboard.jetstream()
    with pytest.raises((nats.errors.TimeoutError, nats.js.errors.APIError)):
        await js.delete_stream("TRANCHE_ORDERS")
    assert denied(users)
    users.errors.clear()
    await dashboard.publish("tranche.orders.events.bot-1", b"{}")
    await dashboard.flush()
    await asyncio.sleep(0.2)
    assert denied(users)
    # What it is for still works: reading stream info and the positions bucket.
    assert (await js.stream_info("TRANCHE_ORDERS")).state.messages == 0
    bucket = await js.key_value("tranche_positions")
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await bucket.get("bot-1")
    await dashboard.close()


@pytest.mark.parametrize("user", (*credentials.SERVICE_USERS, "operator"))
async def test_no_service_creates_purges_or_deletes_a_stream(users: As, user: str) -> None:
    nc = await users.connect(user)
    js = nc.jetstream()
    for attempt in (
        lambda: js.add_stream(name="STOLEN", subjects=["stolen.>"]),
        lambda: js.purge_stream("TRANCHE_INTENTS"),
        lambda: js.delete_stream("TRANCHE_DLQ"),
    ):
        with pytest.raises((TimeoutError, nats.errors.TimeoutError, nats.js.errors.APIError)):
            await asyncio.wait_for(attempt(), 3)
    assert denied(users), user
    admin = await users.connect("admin")
    names = await admin.jetstream().streams_info()
    assert "STOLEN" not in {info.config.name for info in names}
    await nc.close()
    await admin.close()


async def test_a_service_cannot_take_over_another_services_consumer(users: As) -> None:
    executor, signal = await users.connect("executor"), await users.connect("signal")
    approved = streams.EXECUTOR_APPROVED
    await executor.jetstream().add_consumer(approved.stream.name, config=approved.config())
    with pytest.raises((nats.errors.TimeoutError, nats.js.errors.APIError)):
        await signal.jetstream().delete_consumer(approved.stream.name, approved.durable)
    puller = await signal.jetstream().pull_subscribe_bind(approved.durable, approved.stream.name)
    with pytest.raises(nats.errors.TimeoutError):
        await puller.fetch(1, timeout=1)
    assert denied(users)
    info = await executor.jetstream().consumer_info(approved.stream.name, approved.durable)
    assert info.name == approved.durable
    await executor.close()
    await signal.close()


async def test_a_service_with_its_user_starts_only_once_the_streams_exist(
    secured: NatsServer, passwords: dict[str, str], tmp_path: Path
) -> None:
    settings = ServiceSettings(
        service="ledger",
        nats_url=secured.url,
        nats_user="ledger",
        nats_password=passwords["ledger"],
        stream_setup="check",
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        nats_connect_timeout_s=5,
    )
    with pytest.raises(StartupError, match="provision the streams first"):
        await Service(settings, []).start()
    admin = await nats.connect(secured.url, user="admin", password=passwords["admin"])
    await ensure_streams(admin.jetstream())
    await admin.close()
    service = Service(settings, [])
    await service.start()
    try:
        assert service.nc is not None and service.nc.is_connected
    finally:
        await service.stop()
    assert passwords["ledger"] not in repr(settings)  # a SecretStr


async def test_a_wrong_password_stops_a_service_with_one_sentence_and_no_secret(
    secured: NatsServer, tmp_path: Path
) -> None:
    wrong = credentials.new_password()
    settings = ServiceSettings(
        service="ledger",
        nats_url=secured.url,
        nats_user="ledger",
        nats_password=wrong,
        stream_setup="check",
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        nats_connect_timeout_s=3,
    )
    service = Service(settings, [])
    with pytest.raises(StartupError) as refused:
        await service.start()
    message = str(refused.value)
    assert "refused user ledger" in message and "TRANCHE_NATS_PASSWORD" in message
    assert wrong not in message and wrong not in repr(settings)
    await service.broker.stop()


async def test_an_operator_command_refused_by_nats_says_so_in_one_sentence(
    secured: NatsServer, passwords: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRANCHE_NATS_USER", raising=False)
    monkeypatch.delenv("TRANCHE_NATS_PASSWORD", raising=False)
    data_dir = tmp_path / "var"
    with pytest.raises(ConnectionError, match="NATS refused a connection without a user"):
        await credentials.operator_connect(secured.url, data_dir)
    credentials.write_passwords(data_dir, {"operator": "Stale1"})  # an older run's
    with pytest.raises(ConnectionError, match="NATS refused user operator") as refused:
        await credentials.operator_connect(secured.url, data_dir)
    assert "Stale1" not in str(refused.value)
    credentials.write_passwords(data_dir, passwords)  # this run's, as tranche up writes them
    nc = await credentials.operator_connect(secured.url, data_dir)
    await nc.close()


async def test_a_service_refuses_to_start_on_a_stream_provisioned_without_a_newer_subject(
    secured: NatsServer, passwords: dict[str, str], tmp_path: Path
) -> None:
    admin = await nats.connect(secured.url, user="admin", password=passwords["admin"])
    await ensure_streams(admin.jetstream())
    older = streams.LEDGER.config()
    older.subjects = ["tranche.ledger.positions.>"]  # as provisioned before the breach reports
    await admin.jetstream().update_stream(older)
    await admin.close()
    settings = ServiceSettings(
        service="ledger", nats_url=secured.url, nats_user="ledger",
        nats_password=passwords["ledger"], stream_setup="check",
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}", nats_connect_timeout_s=5,
    )  # fmt: skip
    service = Service(settings, [])
    with pytest.raises(StartupError, match=r"TRANCHE_LEDGER's subjects tranche\.ledger\.breaches"):
        await service.start()
    await service.broker.stop()
    if service.nc is not None:
        await service.nc.close()
