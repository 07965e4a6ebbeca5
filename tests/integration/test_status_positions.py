"""``tranche status`` in a production deployment: the real ledger (in-process, real NATS,
SQLite and PostgreSQL) books a production fill, and ``tranche status`` lists that position
beside the mock one. It asked the ledger's ``GET /positions`` without a mode, which is the mock
book: real money was never shown."""

from __future__ import annotations

import asyncio

from tests.integration import test_ledger_service
from tests.integration.test_ledger_service import Ledger, event
from tests.support.served import served
from tranche.stack import free_port
from tranche.status import gather

books = test_ledger_service.ledger
"""The ledger service in-process (the fixture of test_ledger_service)."""


async def test_status_lists_the_production_positions_beside_the_mock_ones(books: Ledger) -> None:
    await books.send(event(1, "buy", "0.1", "3", mode="production"))
    await books.send(event(2, "buy", "0.1", "2"))
    booked = await books.position("l-1", mode="production")
    assert booked["position"]["status"] == "open"  # the ledger holds 3 ETH of real money
    await books.position("l-1", mode="mock")

    async with served(books.service.http_app()) as ledger_url:
        nobody = f"http://127.0.0.1:{free_port()}"
        urls = {"ledger": ledger_url, "signal": nobody, "safety": nobody, "executor": nobody}
        status = await asyncio.to_thread(gather, urls)

    shown = [(p["bot_id"], p["mode"], p["status"], p["quantity"]) for p in status["positions"]]
    assert sorted(shown) == [("l-1", "mock", "open", "2"), ("l-1", "production", "open", "3")]
    assert status["positions_unread"] == []
