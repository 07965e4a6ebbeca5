"""The ledger refuses a fill whose product is not its position's (issue 14, item 6): it used
to mix XRP and ETH in one position. The refused event goes to the dead-letter subject with the
reason and the position stays as it was."""

from __future__ import annotations

from decimal import Decimal

from shared import subjects
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
