"""Which price a new mock order is judged and filled at (pure: no database)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.executor.exchanges.base import OrderRequest
from services.executor.exchanges.mock import Quote, pricing_quote

LATEST = Quote(Decimal("0.09"), datetime(2018, 1, 20, 12, tzinfo=UTC))
INTENT_TIME = datetime(2018, 1, 20, 11, tzinfo=UTC)


def request(price: str | None, at: datetime | None) -> OrderRequest:
    return OrderRequest(
        "c", "ETH-BTC", "buy", "market", Decimal("0.01"),
        reference_price=Decimal(price) if price else None, market_time=at,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fill_at", "price", "at", "latest", "expected"),
    [
        ("intent", "0.08", INTENT_TIME, LATEST, Quote(Decimal("0.08"), INTENT_TIME)),
        ("intent", "0.08", INTENT_TIME, None, Quote(Decimal("0.08"), INTENT_TIME)),
        ("intent", None, None, LATEST, LATEST),  # no intent price: the latest, as before
        ("intent", "0.08", None, LATEST, LATEST),  # a price without its time cannot stamp a fill
        ("intent", None, None, None, None),  # no price at all: no trade
        ("latest", "0.08", INTENT_TIME, LATEST, LATEST),
        ("latest", "0.08", INTENT_TIME, None, None),
    ],
)
def test_the_price_an_order_fills_at(fill_at, price, at, latest, expected) -> None:
    assert pricing_quote(request(price, at), latest, fill_at) == expected
