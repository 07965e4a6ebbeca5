"""Every order event the executor publishes carries its bot's ``sequence``: durable, growing,
shared by executor instances on one database (what the ledger books fills in), on SQLite and
PostgreSQL."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlmodel import Session, col, select

from services.executor.store import TABLES, OrderRow, record_event
from shared.contracts import OrderEvent
from shared.db import create_tables, make_engine
from shared.outbox import OutboxMessage

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def url(database_url: str) -> str:
    engine = make_engine(database_url)
    create_tables(engine, [*TABLES, OutboxMessage])
    engine.dispose()
    return database_url


def order(bot: str, cid: str) -> OrderRow:
    return OrderRow(
        client_order_id=cid, exchange_client_order_id=f"tranche-{cid}", intent_id=cid,
        bot_id=bot, product_id="ETH-BTC", mode="mock", action="entry", side="buy",
        decided_at=NOW, status="new",
    )  # fmt: skip


def publish(url: str, bot: str, cid: str, status: str = "submitted") -> None:
    """One executor instance (its own engine) records one event, in its own transaction."""
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            row = session.get(OrderRow, cid) or order(bot, cid)
            event = OrderEvent(
                message_id=f"order-{cid}-{status}", correlation_id=cid, time=NOW, bot_id=bot,
                product_id="ETH-BTC", mode="mock", intent_id=cid, client_order_id=cid,
                action="entry", side="buy", status=status,  # type: ignore[arg-type]
            )  # fmt: skip
            record_event(session, row, event)
            session.commit()
    finally:
        engine.dispose()


def sequences(url: str, bot: str) -> list[int]:
    engine = make_engine(url)
    with Session(engine) as session:
        rows = session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id))).all()
        found = [json.loads(r.payload) for r in rows]
    engine.dispose()
    return [p["sequence"] for p in found if p["bot_id"] == bot]


def test_each_bot_counts_its_own_events_and_a_restart_goes_on(url: str) -> None:
    publish(url, "bot-a", "a1")
    publish(url, "bot-b", "b1")
    publish(url, "bot-a", "a1", "open")
    publish(url, "bot-a", "a1", "open")  # the same event again: staged once, no number drawn
    publish(url, "bot-a", "a2")  # a new engine each time: as after a restart
    assert sequences(url, "bot-a") == [1, 2, 3]
    assert sequences(url, "bot-b") == [1]


def test_two_instances_at_once_never_share_or_reverse_a_number(url: str) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda n: publish(url, "bot-a", f"o{n}"), range(30)))
    found = sequences(url, "bot-a")
    assert sorted(found) == list(range(1, 31))
