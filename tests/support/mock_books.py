"""A mock exchange on a test database, priced by a dict the test moves (shared by the mock
exchange's tests)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from services.executor.exchanges.mock import MockExchange, MockSettings, Quote
from shared.catalog import load_catalog

AT = datetime(2018, 1, 20, tzinfo=UTC)
PRODUCTS = load_catalog().products


def exchange(engine, price: str = "0.09", **settings) -> tuple[MockExchange, dict]:
    """The mock on ``engine``, ETH-BTC at ``price`` (event time :data:`AT`), and its prices."""
    quotes = {"ETH-BTC": Quote(Decimal(price), AT)}
    return MockExchange(engine, PRODUCTS, None, quotes.get, MockSettings(**settings)), quotes
