"""The four attacks of issue 14, each with one stolen service user on a real NATS server with
deploy/nats/tranche-auth.conf. Each of them worked on the code before the fix."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from nats.js.api import StreamConfig

from shared import subjects
from tests.support.nats_users import As, denied, stored

REFUSED = (TimeoutError, nats.errors.TimeoutError, nats.js.errors.APIError)


async def test_the_signal_user_cannot_forge_an_approval_through_a_bucket_republish(
    users: As,
) -> None:
    signal = await users.connect("signal")
    js = signal.jetstream()
    info = await js.stream_info("KV_tranche_bots")
    forged = StreamConfig.from_response(info.config.as_dict())
    forged.republish = nats.js.api.RePublish(  # type: ignore[attr-defined]
        src="$KV.tranche_bots.x", dest="tranche.orders.approved.bot-1"
    )
    with pytest.raises(REFUSED):
        await asyncio.wait_for(js.update_stream(forged), 3)
    # Whatever the update did, a put on the bucket must not become an approval.
    approval = json.dumps({"client_order_id": "forged", "mode": "mock"}).encode()
    await signal.publish("$KV.tranche_bots.x", approval)
    await signal.flush()
    await asyncio.sleep(0.3)
    assert await stored(signal, "TRANCHE_ORDERS") == 0
    admin = await users.connect("admin")
    republish = (await admin.jetstream().stream_info("KV_tranche_bots")).config.republish
    assert republish is None
    await signal.close()
    await admin.close()


async def test_the_dashboard_cannot_answer_the_kill_switch_for_safety(users: As) -> None:
    dashboard = await users.connect("dashboard")
    answered: list[str] = []

    async def impostor(msg) -> None:
        answered.append(msg.reply)
        fake = {"schema_version": 1, "ok": True, "code": "HALT", "message": "halted"}
        await dashboard.publish(msg.reply, json.dumps(fake).encode())

    await dashboard.subscribe(subjects.SAFETY_CONTROL, queue="safety", cb=impostor)
    await dashboard.flush()
    await asyncio.sleep(0.1)
    operator = await users.connect("operator")
    command = {"command": "halt", "command_id": "c-1", "bot_id": "bot-1"}
    with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
        await operator.request(subjects.SAFETY_CONTROL, json.dumps(command).encode(), timeout=1)
    assert answered == []  # it never even saw the command
    assert denied(users)
    await dashboard.close()
    await operator.close()


async def test_the_ledger_cannot_halt(users: As) -> None:
    ledger = await users.connect("ledger")
    halt = {
        "message_id": "fake-halt",
        "correlation_id": "fake-halt",
        "time": "2026-01-01T00:00:00Z",
        "code": "HALT",
        "message": "halted",
        "bot_id": "bot-1",
        "state": "halted",
        "caused_by": "ledger",
    }
    with pytest.raises(REFUSED):
        await ledger.jetstream().publish(
            subjects.SAFETY_EVENTS, json.dumps(halt).encode(), timeout=1
        )
    assert await stored(ledger, "TRANCHE_SAFETY") == 0
    await ledger.close()


async def test_the_dashboard_cannot_delete_safetys_positions_watch(users: As) -> None:
    safety = await users.connect("safety")
    bucket = await safety.jetstream().key_value(subjects.POSITIONS_BUCKET)
    watch = await bucket.watch(">")
    assert await watch.updates(timeout=2) is None  # the initial values are in
    consumer = (await watch._sub.consumer_info()).name
    dashboard = await users.connect("dashboard")
    with pytest.raises(REFUSED):
        await asyncio.wait_for(
            dashboard.jetstream().delete_consumer("KV_tranche_positions", consumer), 3
        )
    info = await safety.jetstream().consumer_info("KV_tranche_positions", consumer)
    assert info.name == consumer
    await watch.stop()
    await safety.close()
    await dashboard.close()
