"""A time far in the future wedges nothing (issue 14, item 5), shown on the ledger in-process
on a real NATS server: a ticker dated 9999, or far ahead of the clock or of the newest price,
goes to the dead-letter subject with a reason and the real ticks after it still mark the
position; a fill dated far ahead is refused and the next real fill is booked."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from shared import subjects
from shared.money import utc_now
from shared.streams import DLQ
from tests.integration import test_ledger_service
from tests.integration.test_ledger_service import T0, Ledger, event, settled, stream_subjects

books = test_ledger_service.ledger
"""The ledger service in-process (the fixture of test_ledger_service, on SQLite and PostgreSQL)."""


async def tick(ledger: Ledger, price: str, at: datetime | str) -> None:
    time = at if isinstance(at, str) else at.isoformat()
    body = {"product_id": "ETH-BTC", "price": price, "time": time}
    await ledger.nc.publish("tranche.market.ticker.ETH-BTC", json.dumps(body).encode())
    await ledger.nc.flush()


async def dead_letters(ledger: Ledger) -> list[dict]:
    return await stream_subjects(ledger.nc, DLQ.name, subjects.for_token(subjects.DLQ, "ledger"))


async def unrealized(ledger: Ledger, expected: str) -> Decimal | None:
    found = None
    for _ in range(200):
        found = (await ledger.http.get("/positions/l-1")).json()["unrealized_pnl"]
        if found is not None and Decimal(found) == Decimal(expected):
            break
        await asyncio.sleep(0.05)
    return Decimal(found) if found is not None else None


async def test_future_tickers_are_dead_lettered_and_real_ticks_still_mark(books: Ledger) -> None:
    await books.send(event(1, "buy", "10", "100"))
    await books.position("l-1")
    await tick(books, "50", "9999-12-31T00:00:00+00:00")  # refused by the contract
    await tick(books, "40", utc_now() + timedelta(days=30))  # ahead of the clock
    await tick(books, "11", T0 + timedelta(hours=1))
    await tick(books, "30", T0 + timedelta(days=30))  # ahead of the newest price
    await tick(books, "12", T0 + timedelta(hours=2))
    assert await unrealized(books, "200") == Decimal("200")  # 100 x 12 - 1000
    letters = await settled(lambda: dead_letters(books), None, count=3)
    codes = [reason["code"] for letter in letters for reason in letter["reasons"]]
    assert codes == ["INVALID_FIELD", "EVENT_TIME_AHEAD", "EVENT_TIME_JUMP"], letters
    assert all("ahead" in letter["reasons"][0]["message"] for letter in letters[1:])


async def test_a_fill_dated_far_ahead_is_refused_and_the_next_is_booked(books: Ledger) -> None:
    await books.send(event(1, "buy", "10", "100", at=datetime(2999, 12, 31, tzinfo=UTC)))
    await books.send(event(2, "buy", "10", "100", at=utc_now() + timedelta(days=30)))
    await books.send(event(3, "buy", "12", "100"))
    detail = await books.position("l-1")
    assert Decimal(detail["position"]["quantity"]) == Decimal(100)
    letters = await settled(lambda: dead_letters(books), None, count=2)
    assert [letter["reasons"][0]["code"] for letter in letters] == ["EVENT_TIME_AHEAD"] * 2
