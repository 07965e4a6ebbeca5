"""The live Coinbase feed's pure parts: which trades of a ticker answer are new (each published
once, oldest first, with the exchange's time), and how long to wait after failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.signal.feeds.coinbase import Cursor, backoff_s, new_tickers, parse_live_spec

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def trade(trade_id: int, price: str, seconds: float, product: str = "BTC-USD") -> dict:
    at = (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    return {"trade_id": str(trade_id), "product_id": product, "price": price, "time": at}


def answer(*trades: dict) -> dict:
    # Coinbase answers newest first.
    return {"trades": list(reversed(trades)), "best_bid": "99", "best_ask": "101"}


def test_the_first_answer_gives_only_the_newest_trade_with_the_exchange_time() -> None:
    cursor = Cursor()
    (tick,) = new_tickers("BTC-USD", answer(trade(1, "100", 0), trade(2, "100.5", 1)), cursor)
    assert (tick.price, tick.time, tick.source) == (Decimal("100.5"), T0 + timedelta(seconds=1),
                                                    "coinbase")  # fmt: skip
    assert (tick.best_bid, tick.best_ask) == (Decimal(99), Decimal(101))


def test_later_answers_give_every_new_trade_once_oldest_first() -> None:
    cursor = Cursor()
    new_tickers("BTC-USD", answer(trade(1, "100", 0)), cursor)
    assert new_tickers("BTC-USD", answer(trade(1, "100", 0)), cursor) == []  # nothing new
    fresh = new_tickers(
        "BTC-USD", answer(trade(1, "100", 0), trade(2, "101", 1), trade(3, "102", 1)), cursor
    )
    assert [t.price for t in fresh] == [Decimal(101), Decimal(102)]  # same second: both
    again = new_tickers("BTC-USD", answer(trade(2, "101", 1), trade(3, "102", 1)), cursor)
    assert again == []


@pytest.mark.parametrize(
    "bad",
    [
        {"trade_id": "9", "product_id": "BTC-USD", "price": "abc", "time": "2026-11-26T12:00:05Z"},
        {"trade_id": "9", "product_id": "BTC-USD", "price": "-1", "time": "2026-11-26T12:00:05Z"},
        {"trade_id": "9", "product_id": "BTC-USD", "price": "NaN", "time": "2026-11-26T12:00:05Z"},
        {"trade_id": "9", "product_id": "BTC-USD", "price": "100", "time": "yesterday"},
        {"trade_id": "", "product_id": "BTC-USD", "price": "100", "time": "2026-11-26T12:00:05Z"},
        {"trade_id": "9", "product_id": "ETH-USD", "price": "100", "time": "2026-11-26T12:00:05Z"},
    ],
)
def test_an_unusable_trade_is_skipped_not_fatal(bad: dict) -> None:
    cursor = Cursor()
    new_tickers("BTC-USD", answer(trade(1, "100", 0)), cursor)
    assert new_tickers("BTC-USD", answer(trade(1, "100", 0), bad), cursor) == []
    assert new_tickers("BTC-USD", {"trades": None}, cursor) == []


@given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 20)), min_size=1, max_size=30))
def test_overlapping_answers_never_publish_a_trade_twice_or_go_back_in_time(tape) -> None:
    trades = [trade(i, str(100 + i), seconds) for i, (_, seconds) in enumerate(tape, 1)]
    trades.sort(key=lambda t: (t["time"], t["trade_id"]))
    cursor, published = Cursor(), []
    for end, (window, _) in enumerate(tape, 1):  # each poll sees the last `window` trades so far
        seen = trades[:end][-window:]
        published += new_tickers("BTC-USD", answer(*seen), cursor)
    assert len({(t.time, t.price) for t in published}) == len(published)
    assert [t.time for t in published] == sorted(t.time for t in published)


@pytest.mark.parametrize(
    ("failures", "retry_after", "wait"),
    [(1, None, 1.0), (2, None, 2.0), (4, None, 8.0), (10, None, 60.0), (1, 5.0, 5.0),
     (1, 600.0, 60.0), (3, 0.0, 1.0)],
)  # fmt: skip
def test_failures_back_off_exponentially_and_honour_retry_after(failures, retry_after, wait):
    assert backoff_s(failures, 1.0, 60.0, retry_after) == wait


def test_the_feed_setting_names_products_or_stops_the_service_with_a_sentence() -> None:
    assert parse_live_spec(" BTC-USD, ETH-USD ,") == ["BTC-USD", "ETH-USD"]
    assert parse_live_spec("") == []
    with pytest.raises(ValueError, match="'btc usd' is not a Coinbase product id"):
        parse_live_spec("BTC-USD,btc usd")
    with pytest.raises(ValueError, match="twice"):
        parse_live_spec("BTC-USD,BTC-USD")
