"""Forged order events against the running ledger, safety and signal, each as its own NATS user
on a real server with deploy/nats/tranche-auth.conf. Without the executor's signature a
``filled`` event is nobody's money: never booked, never counted, dead-lettered by whoever
received it as ORDER_EVENT_NOT_SIGNED.

Two ways in (docs/deploy.md, "What the broker cannot stop"):

- the signal user's bucket watch with a deliver subject of ``tranche.orders.events.<bot>``: the
  server delivers the bucket's value there with its own authority and TRANCHE_ORDERS stores it.
  On nats-server 2.15 the copy keeps the bucket's subject (``$KV.tranche_bots.<key>``), so the
  readers' durable consumers (filtered on ``tranche.orders.events.>``: the ledger's, safety's,
  the signal's) never get it; only plain subscribers of the subject do (the dashboard, which
  shows an order event only with the executor's signature);
- a stolen admin password (or a permissions mistake): a publish on the subject itself, which
  every reader receives.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from sqlmodel import Session, select

from services.ledger.app import build as build_ledger
from services.ledger.config import LedgerSettings
from services.safety.app import build as build_safety
from services.safety.store import DecisionRow, FillRow
from services.signal.app import build as build_signal
from services.signal.config import SignalSettings
from shared import subjects
from shared.contracts import Fill, OrderApproved, OrderEvent
from shared.service import Service
from shared.streams import (
    DLQ,
    LEDGER_ORDER_EVENTS,
    ORDERS,
    SAFETY,
    SAFETY_ORDER_EVENTS,
    SIGNAL_ORDER_EVENTS,
)
from tests.integration.test_safety_service import T0, intent, settings_for
from tests.support.nats_users import As, stored
from tests.support.waiting import eventually

BOT = "eth-btc-momentum"  # the sample catalog's ETH-BTC bot
READERS = ("ledger", "safety", "signal")


@dataclass
class Readers:
    ledger: Service
    safety: Service
    signal: Service


@pytest.fixture
async def readers(users: As, tmp_path: Path) -> AsyncIterator[Readers]:
    """The three readers of order events, each logged in as its own user."""

    def as_user(name: str) -> dict[str, Any]:
        return {
            "nats_user": name, "nats_password": users.passwords[name], "stream_setup": "check",
            "database_url": f"sqlite:///{tmp_path / f'{name}.db'}", "data_dir": tmp_path,
            "nats_url": users.server.url, "outbox_poll_s": 0.2,
        }  # fmt: skip

    safety = as_user("safety")
    running = Readers(
        ledger=build_ledger(LedgerSettings(**as_user("ledger"))),
        safety=build_safety(
            settings_for(safety.pop("database_url"), safety.pop("nats_url"), tmp_path, **safety)
        ),
        signal=build_signal(SignalSettings(**as_user("signal"), replay="")),
    )
    started: list[Service] = []
    try:
        for service in (running.ledger, running.safety, running.signal):
            await service.start()
            started.append(service)
        yield running
    finally:
        for service in reversed(started):
            await service.stop()


async def messages(js, stream: str, subject: str) -> list[Any]:
    info = await js.stream_info(stream)
    found = []
    for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
        message = await js.get_msg(stream, seq)
        if message.subject == subject:
            found.append(message)
    return found


async def refusals(js, service: str) -> list[str]:
    """The reason codes on ``tranche.dlq.<service>``."""
    letters = await messages(js, DLQ.name, subjects.for_token(subjects.DLQ, service))
    return [reason["code"] for letter in letters for reason in json.loads(letter.data)["reasons"]]


async def approved_order(users: As, signal) -> OrderApproved:
    """A real approval for the bot (the signal user asks, safety approves), so that a fill for
    its order would count at safety."""
    asked = intent(BOT)
    await signal.jetstream().publish(
        subjects.for_token(subjects.INTENTS, BOT),
        asked.model_dump_json().encode(),
        headers={"Nats-Msg-Id": asked.message_id},
    )
    admin = await users.connect("admin")
    subject = subjects.for_token(subjects.ORDERS_APPROVED, BOT)
    (approved,) = await eventually(
        lambda: messages(admin.jetstream(), ORDERS.name, subject), what="safety's approval"
    )
    await admin.close()
    return OrderApproved.model_validate_json(approved.data)


def forged_fill(approval: OrderApproved) -> bytes:
    """The executor's ``filled`` event for the approved order, as anyone can write it."""
    return OrderEvent(
        message_id="forged-filled", correlation_id=approval.intent.intent_id, time=T0,
        bot_id=BOT, product_id="ETH-BTC", mode="mock", intent_id=approval.intent.intent_id,
        client_order_id=approval.client_order_id, action="entry", side="buy", status="filled",
        fills=[Fill(trade_id="forged-1", price=Decimal("0.09"), size=Decimal("1000"),
                    fee=Decimal(0), time=T0)],
        filled_size=Decimal("1000"),
    ).model_dump_json().encode()  # fmt: skip


async def refused_by(js, readers: tuple[str, ...], ledger: httpx.AsyncClient) -> None:
    """Wait until each of ``readers`` dead-lettered the forgery, or (the bug this guards
    against) the ledger booked it; then say which."""

    async def handled() -> bool:
        booked = (await ledger.get(f"/positions/{BOT}")).status_code == 200
        codes = [await refusals(js, service) for service in readers]
        return booked or all("ORDER_EVENT_NOT_SIGNED" in found for found in codes)

    await eventually(handled, what=f"the forgery handled by {', '.join(readers)}")


async def nothing_counted(readers: Readers, approval: OrderApproved, ledger, admin) -> None:
    """The ledger booked nothing; safety's view of the order, its breakers and limits are as
    before: still in flight, unfilled, no fill recorded, no safety event."""
    assert (await ledger.get(f"/positions/{BOT}")).status_code == 404
    with Session(readers.safety.engine) as session:
        decision = session.exec(
            select(DecisionRow).where(DecisionRow.client_order_id == approval.client_order_id)
        ).one()
        assert (decision.final, decision.filled_size) == (False, 0)
        assert session.exec(select(FillRow)).all() == []
    assert await stored(admin, SAFETY.name) == 0


@pytest.fixture
async def ledger_http(readers: Readers) -> AsyncIterator[httpx.AsyncClient]:
    app = readers.ledger.http_app()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ledger"
    ) as client:
        yield client


async def test_a_filled_event_the_signal_user_delivers_through_a_bucket_watch_is_never_money(
    users: As, readers: Readers, ledger_http: httpx.AsyncClient
) -> None:
    signal, admin = await users.connect("signal"), await users.connect("admin")
    dashboard = await users.connect("dashboard")
    approval = await approved_order(users, signal)
    bots = await signal.jetstream().key_value(subjects.BOTS_BUCKET)
    await bots.put("forged", forged_fill(approval))
    # The attack: a "watch" of that key whose deliver subject is the bot's order events. The
    # server delivers only where someone subscribes to that subject: the signal user may not
    # any more (it reads order events through its durable consumer), the running dashboard does
    # (it watches tranche.>), so the interest here is the dashboard user's.
    deliver_to = subjects.for_token(subjects.ORDERS_EVENTS, BOT)
    seen = await dashboard.subscribe(deliver_to)
    await dashboard.flush()
    await signal.jetstream().add_consumer(
        f"KV_{subjects.BOTS_BUCKET}",
        config=ConsumerConfig(
            deliver_subject=deliver_to,
            filter_subject=f"$KV.{subjects.BOTS_BUCKET}.forged",
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=AckPolicy.NONE,
        ),
    )
    delivered = await seen.next_msg(timeout=30)
    assert json.loads(delivered.data)["message_id"] == "forged-filled"  # it got that far
    js = admin.jetstream()
    (_stored,) = await eventually(
        lambda: messages(js, ORDERS.name, f"$KV.{subjects.BOTS_BUCKET}.forged"),
        what="the forged event stored in TRANCHE_ORDERS",
    )
    # Stored under the bucket's subject, so no reader's durable consumer (filtered on
    # tranche.orders.events.>) is handed it: each has caught up with nothing pending.
    for consumer in (LEDGER_ORDER_EVENTS, SAFETY_ORDER_EVENTS, SIGNAL_ORDER_EVENTS):

        async def caught_up(name: str = consumer.durable) -> bool:
            info = await js.consumer_info(ORDERS.name, name)
            return info.num_pending == 0 and info.num_ack_pending == 0

        await eventually(caught_up, what=f"{consumer.durable} caught up")
    await nothing_counted(readers, approval, ledger_http, admin)
    for service in READERS:
        assert "ORDER_EVENT_NOT_SIGNED" not in await refusals(js, service), service  # not handed it
    await dashboard.close()
    await signal.close()
    await admin.close()


async def test_a_filled_event_published_with_a_stolen_admin_password_is_never_money(
    users: As, readers: Readers, ledger_http: httpx.AsyncClient
) -> None:
    signal, admin = await users.connect("signal"), await users.connect("admin")
    approval = await approved_order(users, signal)
    js = admin.jetstream()
    await js.publish(subjects.for_token(subjects.ORDERS_EVENTS, BOT), forged_fill(approval))
    await refused_by(js, READERS, ledger_http)
    await nothing_counted(readers, approval, ledger_http, admin)
    for service in READERS:
        assert await refusals(js, service) == ["ORDER_EVENT_NOT_SIGNED"], service
    await signal.close()
    await admin.close()
