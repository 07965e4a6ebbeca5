"""The transactional outbox against a real NATS server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import nats
import pytest
from sqlmodel import Session, col, select, update

from shared import subjects
from shared.bus import outbox_publisher
from shared.contracts import Reason, TradeIntent
from shared.db import create_tables, make_engine
from shared.outbox import OutboxMessage, OutboxRelay, stage
from shared.streams import INTENTS, ensure_streams
from tests.support.nats_server import NatsServer

NOW = datetime(2018, 1, 20, 12, 0, tzinfo=UTC)


def intent(n: int) -> TradeIntent:
    return TradeIntent(
        message_id=f"intent-{n}", correlation_id=f"intent-{n}", time=NOW, intent_id=f"intent-{n}",
        signal_id=f"s-{n}", bot_id="bot-1", product_id="ETH-BTC", action="entry", side="buy",
        quote_size=Decimal("0.01"), temperature=Decimal(80), band="hot",
        reason=Reason(code="SIGNAL", message="t"),
    )  # fmt: skip


async def stream_messages(js, subject: str) -> list:
    info = await js.stream_info(INTENTS.name)
    found = []
    for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
        message = await js.get_msg(INTENTS.name, seq)
        if message.subject == subject:
            found.append(message)
    return found


@pytest.fixture
def engine(database_url: str):
    engine = make_engine(database_url)
    create_tables(engine, [OutboxMessage])
    yield engine
    engine.dispose()


async def test_staged_messages_go_out_once_in_order_with_their_id(engine, nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    subject = subjects.for_token(subjects.INTENTS, "bot-1")
    with Session(engine) as session:
        for n in range(3):
            stage(session, subject, intent(n))
        stage(session, subject, intent(0))  # staging the same message twice keeps one
        session.commit()
    relay = OutboxRelay(engine, outbox_publisher(nc))
    assert await relay.flush() == 3
    assert await relay.flush() == 0

    # A crash after the publish but before the row was marked sent: it goes out again, and
    # JetStream drops it by its Nats-Msg-Id.
    with Session(engine) as session:
        session.exec(update(OutboxMessage).values(published_at=None))
        session.commit()
    assert await relay.flush() == 3
    stored = await stream_messages(js, subject)
    assert [m.headers["Nats-Msg-Id"] for m in stored] == ["intent-0", "intent-1", "intent-2"]
    assert TradeIntent.model_validate_json(stored[1].data) == intent(1)
    await nc.close()


async def test_a_failed_publish_stays_in_the_outbox_until_nats_is_back(
    engine,
    nats_server: NatsServer,
) -> None:
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    await ensure_streams(js)
    subject = subjects.for_token(subjects.INTENTS, "bot-1")
    with Session(engine) as session:
        stage(session, subject, intent(7))
        session.commit()
    relay = OutboxRelay(engine, outbox_publisher(nc))
    nats_server.stop()
    with pytest.raises(Exception):  # noqa: B017 - whichever error nats-py raises while down
        await relay.flush()
    assert relay.pending_count() == 1
    nats_server.start()  # same store directory: the streams are still there
    for _ in range(50):
        if nc.is_connected:
            break
        await asyncio.sleep(0.1)
    assert await relay.flush() == 1
    assert relay.pending_count() == 0
    with Session(engine) as session:
        rows = session.exec(
            select(OutboxMessage).where(col(OutboxMessage.published_at).is_not(None))
        )
        assert len(list(rows)) == 1
    assert len(await stream_messages(js, subject)) == 1
    await nc.close()
