"""The ledger refuses a fill whose product is not its position's (issue 14, item 6): it used
to mix XRP and ETH in one position. The refused event goes to the dead-letter subject with the
reason and the position stays as it was."""

from __future__ import annotations

from decimal import Decimal

from sqlmodel import Session

from services.ledger.rebuild import rebuild
from services.ledger.store import add_fills
from shared import subjects
from shared.catalog import load_catalog
from shared.streams import DLQ
from tests.integration import test_ledger_service
from tests.integration.test_ledger_service import Ledger, event, settled, stream_subjects

books = test_ledger_service.ledger
"""The ledger service in-process (the fixture of test_ledger_service, on SQLite and PostgreSQL)."""


async def test_a_fill_of_another_product_than_the_open_position_is_refused(books: Ledger) -> None:
    await books.send(event(1, "buy", "10", "100"))
    await books.position("l-1")
    other = event(2, "sell", "0.001", "100").model_copy(update={"product_id": "XRP-ETH"})
    await books.send(other)
    await books.send(event(3, "sell", "12", "50"))
    detail = await books.position("l-1", sequence=2)
    assert Decimal(detail["position"]["quantity"]) == Decimal(50)
    assert detail["position"]["product_id"] == "ETH-BTC"
    dlq = subjects.for_token(subjects.DLQ, "ledger")
    letters = await settled(lambda: stream_subjects(books.nc, DLQ.name, dlq), None, count=1)
    assert [letter["reasons"][0]["code"] for letter in letters] == ["PRODUCT_MISMATCH"], letters
    assert "XRP-ETH" in letters[0]["reasons"][0]["message"]


async def test_rebuild_flags_a_position_booked_from_two_products(books: Ledger) -> None:
    await books.send(event(1, "buy", "10", "100"))
    await books.position("l-1")
    other = event(2, "buy", "0.001", "100").model_copy(update={"product_id": "XRP-ETH"})
    with Session(books.service.engine) as session:  # what the ledger booked before the guard
        add_fills(session, other, list(enumerate(other.fills)))
        session.commit()
    catalog = load_catalog(books.config)
    found = [d for d in rebuild(books.service.engine, catalog, None, "pro_rata")
             if d.field == "product_id"]  # fmt: skip
    assert [(d.bot_id, d.stored) for d in found] == [("l-1", "ETH-BTC, XRP-ETH")]
