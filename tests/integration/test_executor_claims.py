"""Executor instances sharing one database: each order is looked after by one live instance, and
a stopped instance's orders are taken over (services/executor/claims.py), on SQLite and
PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlmodel import Session

from services.executor.claims import TTL_S, Claims
from services.executor.exchanges.base import OrderRequest
from services.executor.exchanges.mock import MockExchange, Quote
from services.executor.orders import NEW
from services.executor.store import TABLES, OrderRow
from shared.catalog import load_catalog
from shared.db import create_tables, make_engine

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def engine(database_url: str):
    engine = make_engine(database_url)
    create_tables(engine, TABLES)
    yield engine
    engine.dispose()


def add_orders(engine, *cids: str, status: str = NEW) -> None:
    with Session(engine) as session:
        for cid in cids:
            session.add(
                OrderRow(
                    client_order_id=cid, exchange_client_order_id=f"tranche-{cid}",
                    intent_id=cid, bot_id="bot-1", product_id="ETH-BTC", mode="mock",
                    action="entry", side="buy", decided_at=NOW, status=status,
                )
            )  # fmt: skip
        session.commit()


def test_only_the_claimant_acts_until_it_stops_renewing(engine) -> None:
    clock = Clock()
    a, b = Claims(engine, "a", clock=clock), Claims(engine, "b", clock=clock)
    add_orders(engine, "o1")
    a.heartbeat(), b.heartbeat()
    assert a.hold("o1") and not b.hold("o1") and a.hold("o1")
    assert b.orphans() == []
    clock.now += timedelta(seconds=TTL_S / 2)
    b.heartbeat()  # a is silent, but not for long enough yet
    assert not b.hold("o1")
    clock.now += timedelta(seconds=TTL_S)
    b.heartbeat()
    assert b.orphans() == ["o1"]
    assert b.hold("o1") and not a.hold("o1")  # taken over; a, back, keeps off


def test_a_clean_stop_hands_its_orders_over_at_once(engine) -> None:
    clock = Clock()
    a, b = Claims(engine, "a", clock=clock), Claims(engine, "b", clock=clock)
    add_orders(engine, "o1", "o2")
    add_orders(engine, "done", status="filled")
    a.heartbeat(), b.heartbeat()
    assert a.hold("o1") and a.hold("o2") and a.hold("done")
    a.release()
    assert b.orphans() == ["o1", "o2"]  # final orders are nobody's business
    assert b.hold("o1") and b.hold("o2")


def test_orders_nobody_claimed_are_orphans(engine) -> None:
    claims = Claims(engine, "a", clock=Clock())
    add_orders(engine, "old", "adopted")
    claims.heartbeat()
    assert claims.orphans() == ["old", "adopted"]
    assert claims.hold("old")
    assert claims.orphans() == ["adopted"]


def test_two_instances_racing_for_the_same_orders_each_get_some_never_both(engine) -> None:
    cids = [f"o{n}" for n in range(40)]
    add_orders(engine, *cids)
    instances = [Claims(engine, name) for name in ("a", "b")]
    for instance in instances:
        instance.heartbeat()

    def grab(instance: Claims) -> set[str]:
        return {cid for cid in cids if instance.hold(cid)}

    with ThreadPoolExecutor(2) as pool:
        held = list(pool.map(grab, instances))
    assert held[0].isdisjoint(held[1]) and held[0] | held[1] == set(cids)


def test_an_executor_that_takes_over_a_resting_order_matches_it(engine) -> None:
    """Two mock exchanges on one book (two executor instances): the one that did not place a
    resting order starts matching it once it has looked the order up (it took it over)."""
    products = load_catalog().products
    quotes = {"ETH-BTC": Quote(Decimal("0.09"), NOW)}
    placer = MockExchange(engine, products, None, quotes.get)
    heir = MockExchange(engine, products, None, quotes.get)
    assert heir.on_quote("ETH-BTC") == 0  # nothing rests yet: it remembers that
    order = placer.place(
        OrderRequest("r1", "ETH-BTC", "buy", "limit", None, Decimal("0.01"), Decimal("0.085"))
    )
    assert order.status == "OPEN"
    quotes["ETH-BTC"] = Quote(Decimal("0.08"), NOW + timedelta(seconds=1))
    assert heir.on_quote("ETH-BTC") == 0  # not its order, and it did not know it rests
    heir.get(order.exchange_order_id)  # the heir's first poll after taking it over
    assert heir.on_quote("ETH-BTC") == 1
    assert heir.get(order.exchange_order_id).status == "FILLED"
