"""The signal service's stop state on SQLite and PostgreSQL: written with the stop's intent and
on each order event of it, the same event twice changes nothing, and a restarted service goes on
from it (the stop that ended is asked again under the next attempt's id)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TypeVar

from sqlmodel import Session, select

from services.signal.handlers import SignalHandlers
from services.signal.store import TABLES, SignalRecord, StopStateRow
from shared.contracts import SignalEvaluation, Ticker
from shared.db import create_tables, make_engine
from shared.outbox import OutboxMessage
from tests.unit.signal.test_exchange_stop import BOT, NOW, POSITION, PRODUCT, order_event
from tranche.backtest.inprocess import FixedBots

T = TypeVar("T")


def handlers_on(database_url: str, bots: FixedBots) -> SignalHandlers:
    engine = make_engine(database_url)
    create_tables(engine, [OutboxMessage, *TABLES])

    async def transact(change: Callable[[Session], T]) -> T:
        with Session(engine, expire_on_commit=False) as session:
            result = change(session)
            session.commit()
            return result

    async def publish(_: SignalEvaluation) -> None:
        return None

    return SignalHandlers(
        bots=bots, transact=transact, publish_evaluation=publish, products={"ETH-BTC": PRODUCT}
    )


async def test_the_stop_state_survives_a_restart(database_url: str) -> None:
    bots = FixedBots()
    bots.add("b", BOT)
    first = handlers_on(database_url, bots)
    await first.evaluate_tick(Ticker(product_id="ETH-BTC", price=Decimal("0.09"), time=NOW))
    await first.keep_position(POSITION)
    await first.stop_event(order_event("stop:b:b-mock-1:4", "open"))
    cancelled = order_event("stop:b:b-mock-1:4", "cancelled")
    await first.stop_event(cancelled)
    await first.stop_event(cancelled)  # redelivered: nothing more
    assert first.stops_asked["b"] == "stop:b:b-mock-1:4:1"

    restarted = handlers_on(database_url, bots)
    await restarted.load_stops()
    assert restarted.stops_asked == {"b": "stop:b:b-mock-1:4:1"}
    assert restarted.stop_attempts == {"b": ("b-mock-1:4", 1)}
    stop = restarted.stop_orders["b"]
    assert (stop.status, stop.order.size, stop.order.limit_price) == (
        "asked", Decimal("0.11"), Decimal("0.087759"),
    )  # fmt: skip
    await restarted.keep_position(POSITION)
    await restarted.evaluate_tick(Ticker(product_id="ETH-BTC", price=Decimal("0.09"), time=NOW))
    await restarted.stop_event(order_event("stop:b:b-mock-1:4:1", "failed", "INSUFFICIENT_FUND"))
    assert restarted.stops_asked["b"] == "stop:b:b-mock-1:4:2"

    def stored(session: Session) -> tuple[list[str | None], StopStateRow | None]:
        asked = session.exec(select(SignalRecord.intent_id).where(SignalRecord.bot_id == "b"))
        return sorted(asked, key=str), session.get(StopStateRow, "b")

    intents, row = await restarted.transact(stored)
    assert intents == ["stop:b:b-mock-1:4", "stop:b:b-mock-1:4:1", "stop:b:b-mock-1:4:2"]
    assert row is not None and (row.asked_intent_id, row.attempts) == ("stop:b:b-mock-1:4:2", 2)
