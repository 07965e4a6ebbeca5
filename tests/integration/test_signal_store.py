"""The signal service's store on SQLite and PostgreSQL: a confirmed signal acts once, however
often it comes (a redelivery, a restart), and its intent is staged with its record."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from services.signal.handlers import SignalHandlers
from services.signal.intents import Market
from services.signal.store import TABLES, SignalRecord
from shared.catalog import Bot
from shared.db import create_tables
from shared.outbox import OutboxMessage
from tranche.backtest.inprocess import FixedBots

T0 = datetime(2018, 1, 20, 12, 0, tzinfo=UTC)
BOT = Bot(product_id="ETH-BTC", quote_size=Decimal("0.01"))


def handlers_on(engine: Engine) -> SignalHandlers:
    """The service's handlers over ``engine``, as after a (re)start: nothing in memory."""

    async def transact(change: Callable[[Session], Any]) -> Any:
        with Session(engine, expire_on_commit=False) as session:
            result = change(session)
            session.commit()
            return result

    async def publish(_evaluation: object) -> None:
        pass

    bots = FixedBots()
    bots.add("b", BOT)
    handlers = SignalHandlers(bots=bots, transact=transact, publish_evaluation=publish)
    handlers.markets["ETH-BTC"] = Market(price=Decimal("0.1"), time=T0)
    return handlers


def test_a_confirmed_signal_makes_one_intent_however_often_it_comes(engine: Engine) -> None:
    create_tables(engine, [OutboxMessage, *TABLES])

    async def buy(handlers: SignalHandlers, signal_id: str) -> object:
        running = handlers.bots.get("b")
        assert running is not None
        return await handlers.act("b", running, "buy", Decimal(60), signal_id, T0, "signals")

    async def run() -> list[object]:
        first = handlers_on(engine)
        made = [await buy(first, "candle:b:1"), await buy(first, "candle:b:1")]
        made.append(await buy(handlers_on(engine), "candle:b:1"))  # after a restart
        made.append(await buy(first, "candle:b:2"))
        return made

    made = asyncio.run(run())
    assert [m is not None for m in made] == [True, False, False, True]
    with Session(engine) as session:
        records = session.exec(select(SignalRecord).order_by(SignalRecord.signal_id)).all()
        staged = session.exec(select(OutboxMessage).order_by(OutboxMessage.id)).all()
    assert [(r.signal_id, r.side, r.outcome_code) for r in records] == [
        ("candle:b:1", "buy", "SIGNAL"),
        ("candle:b:2", "buy", "SIGNAL"),
    ]
    assert [r.intent_id for r in records] == [m.intent_id for m in (made[0], made[3])]  # type: ignore[union-attr]  # both made an intent (asserted above)
    assert [message.message_id for message in staged] == [r.intent_id for r in records]
