"""The mock exchange's stop-limit orders on SQLite and PostgreSQL, as Coinbase documents them:
they rest untriggered, trigger when the last price falls through the stop, then act as a limit
order that fills at once, rests or fills in parts; a gap through the limit leaves them resting;
prices missed while the executor was down are caught up at their own event times."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from services.executor.exchanges.base import OrderRequest
from services.executor.exchanges.mock import MockExchange, Quote
from services.executor.orders import convert_fill
from tests.support.mock_books import AT, exchange


def stop_sell(cid: str, stop: str = "0.085", limit: str = "0.084", base: str = "0.2"):
    return OrderRequest(
        cid, "ETH-BTC", "sell", "stop_limit", None, Decimal(base), Decimal(limit),
        stop_price=Decimal(stop),
    )  # fmt: skip


def tick(mock: MockExchange, quotes: dict, price: str, seconds: int) -> int:
    quotes["ETH-BTC"] = Quote(Decimal(price), AT + timedelta(seconds=seconds))
    return mock.on_quote("ETH-BTC")


def test_a_stop_rests_untriggered_until_the_price_falls_to_it(engine) -> None:
    mock, quotes = exchange(engine)
    order = mock.place(stop_sell("s"))
    assert order.status == "OPEN" and [o.client_order_id for o in mock.open_orders()] == ["s"]
    assert tick(mock, quotes, "0.0851", 1) == 0
    assert tick(mock, quotes, "0.0849", 2) == 1  # through the stop, above the limit: fills
    done = mock.get(order.exchange_order_id)
    assert done.status == "FILLED" and done.filled_size == Decimal("0.2")
    (fill,) = [convert_fill(f) for f in mock.fills(order.exchange_order_id)]
    assert fill.price == Decimal("0.0849") and fill.liquidity == "taker"
    assert fill.time == AT + timedelta(seconds=2)


def test_a_limit_order_without_a_stop_is_not_held_back(engine) -> None:
    mock, quotes = exchange(engine)
    limit = OrderRequest("l", "ETH-BTC", "sell", "limit", None, Decimal("0.2"), Decimal("0.095"))
    mock.place(limit)
    mock.place(stop_sell("s"))
    assert tick(mock, quotes, "0.0956", 1) == 1  # the limit fills, the stop waits
    assert [o.client_order_id for o in mock.open_orders()] == ["s"]


def test_a_gap_through_the_limit_leaves_the_triggered_stop_resting_unfilled(engine) -> None:
    mock, quotes = exchange(engine)
    order = mock.place(stop_sell("s"))
    assert tick(mock, quotes, "0.080", 1) == 0  # triggered, but below its limit of 0.084
    assert mock.get(order.exchange_order_id).status == "OPEN"
    assert tick(mock, quotes, "0.0845", 2) == 1  # back above the limit: fills at the limit
    (fill,) = [convert_fill(f) for f in mock.fills(order.exchange_order_id)]
    assert fill.price == Decimal("0.084") and fill.liquidity == "maker"


def test_a_triggered_stop_may_fill_in_parts(engine) -> None:
    mock, quotes = exchange(engine, partial_fill_ratio=Decimal("0.5"))
    order = mock.place(stop_sell("s", base="0.4"))
    assert tick(mock, quotes, "0.0849", 1) == 1
    part = mock.get(order.exchange_order_id)
    assert part.status == "OPEN" and part.filled_size == Decimal("0.2")
    assert tick(mock, quotes, "0.0848", 2) == 1  # half of what remains per price
    assert mock.get(order.exchange_order_id).filled_size == Decimal("0.3")


def test_a_stop_the_market_is_already_through_is_refused(engine) -> None:
    mock, _ = exchange(engine, price="0.084")
    order = mock.place(stop_sell("s"))
    assert order.status == "FAILED"
    assert (order.reject_reason or "").startswith("STOP_PRICE_ABOVE_LAST_TRADE_PRICE")


def test_a_cancelled_stop_never_triggers(engine) -> None:
    mock, quotes = exchange(engine)
    order = mock.place(stop_sell("s"))
    mock.cancel(order.exchange_order_id)
    assert tick(mock, quotes, "0.08", 1) == 0
    assert mock.get(order.exchange_order_id).status == "CANCELLED"


def test_prices_missed_while_down_trigger_the_stop_at_their_own_time_once(engine) -> None:
    mock, _ = exchange(engine)
    order = mock.place(stop_sell("s"))
    # A new process (the executor restarted): the book is in the database.
    again, _ = exchange(engine, price="0.09")
    missed = [
        Quote(Decimal(price), AT + timedelta(seconds=n))
        for n, price in ((3, "0.0846"), (1, "0.0860"), (2, "0.0849"))
    ]
    earlier = Quote(Decimal("0.07"), AT - timedelta(seconds=5))  # before the stop was placed
    assert again.catch_up("ETH-BTC", [*missed, earlier]) == 1
    assert again.catch_up("ETH-BTC", missed) == 0  # caught up twice: nothing fills twice
    (fill,) = [convert_fill(f) for f in again.fills(order.exchange_order_id)]
    assert (fill.price, fill.time) == (Decimal("0.0849"), AT + timedelta(seconds=2))
    assert again.get(order.exchange_order_id).status == "FILLED"


def test_a_gapped_stop_is_not_filled_on_restart_by_prices_from_before_it_triggered(
    engine,
) -> None:
    """The catch-up hands a restarted executor every price since the order was recorded, those
    heard live too: a stop that gapped through its limit was filled at the limit by a price from
    before its trigger, while the market stayed below it (mock P&L better than the market's)."""
    mock, quotes = exchange(engine)  # ETH-BTC at 0.09
    stop = mock.place(stop_sell("s"))
    heard = []
    for seconds, price in ((1, "0.0860"), (2, "0.0800"), (3, "0.0790")):
        assert tick(mock, quotes, price, seconds) == 0  # triggered at +2, gapped below 0.084
        heard.append(quotes["ETH-BTC"])
    again, _ = exchange(engine, price="0.0790")
    assert again.catch_up("ETH-BTC", heard) == 0
    assert again.fills(stop.exchange_order_id) == []
    assert again.get(stop.exchange_order_id).status == "OPEN"


def test_a_limit_order_is_not_filled_by_a_price_from_before_it_was_placed(engine) -> None:
    mock, _ = exchange(engine)  # ETH-BTC at 0.09, at AT
    before = Quote(Decimal("0.07"), AT - timedelta(seconds=5))
    buy = mock.place(
        OrderRequest("b", "ETH-BTC", "buy", "limit", None, Decimal("0.2"), Decimal("0.08"))
    )
    again, _ = exchange(engine, price="0.09")
    assert again.catch_up("ETH-BTC", [before]) == 0
    assert again.get(buy.exchange_order_id).status == "OPEN"


def test_a_repeated_client_order_id_returns_the_same_stop(engine) -> None:
    mock, quotes = exchange(engine)
    first = mock.place(stop_sell("s"))
    second = mock.place(stop_sell("s", base="0.3"))
    assert second.exchange_order_id == first.exchange_order_id
    assert tick(mock, quotes, "0.0849", 1) == 1
    assert mock.get(first.exchange_order_id).filled_size == Decimal("0.2")
