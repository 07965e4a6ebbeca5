"""The mock exchange on SQLite and PostgreSQL: Coinbase's rules, slippage, maker/taker fees,
partial fills, latency, injected failures, determinism under a seed, a book that survives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.executor.exchanges.base import (
    ExchangeUnavailable,
    OrderRequest,
    OutcomeUnknown,
    RateLimited,
)
from services.executor.exchanges.mock import MockExchange, MockSettings, Quote
from services.executor.orders import convert_fill
from tests.support.mock_books import AT, PRODUCTS, exchange


def market(cid: str, side: str = "buy", quote: str | None = "0.01", base: str | None = None):
    return OrderRequest(
        cid, "ETH-BTC", side, "market",
        Decimal(quote) if quote else None, Decimal(base) if base else None,
    )  # fmt: skip


def limit(cid: str, price: str, base: str = "0.2", side: str = "buy") -> OrderRequest:
    return OrderRequest(cid, "ETH-BTC", side, "limit", None, Decimal(base), Decimal(price))


def test_slippage_moves_a_market_fill_against_the_order_and_takers_pay_the_taker_fee(
    engine,
) -> None:
    mock, _ = exchange(engine, slippage_bps=Decimal(10), taker_fee_rate=Decimal("0.006"))
    buy = mock.place(market("b", base="1"))
    sell = mock.place(market("s", side="sell", quote=None, base="1"))
    (bought,) = [convert_fill(f) for f in mock.fills(buy.exchange_order_id)]
    (sold,) = [convert_fill(f) for f in mock.fills(sell.exchange_order_id)]
    assert bought.price == Decimal("0.09009") and sold.price == Decimal("0.08991")
    assert bought.liquidity == "taker" and bought.fee == Decimal("0.00054054")


def test_a_quote_sized_buy_reports_its_fills_in_quote_like_coinbase(engine) -> None:
    mock, _ = exchange(engine, market_fill_parts=3)
    order = mock.place(market("q", quote="0.01"))
    raw = mock.fills(order.exchange_order_id)
    assert len(raw) == 3 and all(f.size_in_quote for f in raw)
    assert sum(convert_fill(f).size for f in raw) == order.filled_size == Decimal("0.11111111")
    assert order.status == "FILLED" and order.number_of_fills == 3


def test_a_new_order_is_answered_with_the_fills_it_made_in_their_order(engine) -> None:
    mock, _ = exchange(engine, market_fill_parts=3)
    order = mock.place(market("a", quote="0.01"))
    assert order.fills is not None and len(order.fills) == 3
    assert order.fills == tuple(mock.fills(order.exchange_order_id))  # the same, in order
    again = mock.place(market("a", quote="0.01"))  # the repeat: the order it has, fills asked
    assert again == order and again.fills is None
    assert mock.place(limit("r", "0.085")).fills is None  # resting: nothing filled yet


def test_each_fill_carries_a_unique_entry_id_and_its_trade_type_like_coinbase(engine) -> None:
    mock, _ = exchange(engine, market_fill_parts=3)
    order = mock.place(market("e", quote="0.01"))
    fills = [convert_fill(f) for f in mock.fills(order.exchange_order_id)]
    entry_ids = {fill.entry_id for fill in fills}
    assert None not in entry_ids and len(entry_ids) == 3
    assert entry_ids.isdisjoint({fill.trade_id for fill in fills})
    assert {fill.trade_type for fill in fills} == {"FILL"}
    # The same fill read again has the same entry id: the ledger dedupes by it.
    again = [convert_fill(f) for f in mock.fills(order.exchange_order_id)]
    assert [f.entry_id for f in again] == [f.entry_id for f in fills]


def test_a_resting_limit_order_fills_in_parts_as_maker_at_its_limit(engine) -> None:
    mock, quotes = exchange(
        engine, partial_fill_ratio=Decimal("0.5"), maker_fee_rate=Decimal("0.004")
    )
    order = mock.place(limit("l", "0.085"))
    assert order.status == "OPEN" and mock.on_quote("ETH-BTC") == 0  # 0.09 does not cross
    quotes["ETH-BTC"] = Quote(Decimal("0.08"), AT)
    assert mock.on_quote("ETH-BTC") == 1
    assert mock.get(order.exchange_order_id).filled_size == Decimal("0.1")
    assert mock.on_quote("ETH-BTC") == 0  # the same price heard again (a second executor)
    quotes["ETH-BTC"] = Quote(Decimal("0.08"), AT + timedelta(seconds=1))
    mock.on_quote("ETH-BTC")  # half of what remains each time a (new) price crosses
    part = mock.get(order.exchange_order_id)
    fills = [convert_fill(f) for f in mock.fills(order.exchange_order_id)]
    assert part.status == "OPEN" and part.filled_size == Decimal("0.15")
    assert part.number_of_fills == 2
    assert {f.price for f in fills} == {Decimal("0.085")} and {f.liquidity for f in fills} == {
        "maker"
    }
    assert fills[0].fee == Decimal("0.000034")  # 0.1 * 0.085 * 0.004


def test_a_marketable_limit_order_fills_at_once_as_taker(engine) -> None:
    mock, _ = exchange(engine)
    order = mock.place(limit("m", "0.1"))
    (fill,) = mock.fills(order.exchange_order_id)
    assert order.status == "FILLED" and fill.liquidity_indicator == "TAKER"
    assert fill.price == Decimal("0.09")


def test_cancel_keeps_the_fills_and_a_cancel_of_a_final_order_changes_nothing(engine) -> None:
    mock, quotes = exchange(engine, partial_fill_ratio=Decimal("0.5"))
    order = mock.place(limit("c", "0.085"))
    quotes["ETH-BTC"] = Quote(Decimal("0.08"), AT)
    mock.on_quote("ETH-BTC")
    mock.cancel(order.exchange_order_id)
    mock.cancel(order.exchange_order_id)
    cancelled = mock.get(order.exchange_order_id)
    assert cancelled.status == "CANCELLED" and cancelled.filled_size == Decimal("0.1")
    assert mock.open_orders() == []


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (market("a", quote="0.00001"), "BELOW_MIN_SIZE"),
        (limit("b", "0.085", base="0.0001"), "BELOW_MIN_SIZE"),
        (limit("c", "0.0850000001"), "INVALID_PRICE_PRECISION"),
        (limit("d", "0.085", base="0.2000000001"), "INVALID_SIZE_PRECISION"),
        (OrderRequest("e", "DOGE-USD", "buy", "market", Decimal(1)), "UNKNOWN_PRODUCT"),
    ],
)
def test_orders_breaking_the_product_rules_fail_with_the_reason(engine, request_, code) -> None:
    mock, _ = exchange(engine)
    order = mock.place(request_)
    assert order.status == "FAILED" and order.reject_reason.startswith(code)


def test_injected_failures_429_5xx_and_timeout_after_placing(engine) -> None:
    mock, _ = exchange(engine)
    mock.queued_faults.extend(["rate_limit", "server_error"])
    with pytest.raises(RateLimited):
        mock.place(market("f"))
    with pytest.raises(ExchangeUnavailable):
        mock.place(market("f"))
    assert mock.find("f", "ETH-BTC", AT) is None  # neither took effect
    mock.queued_faults.append("timeout_after_place")
    with pytest.raises(OutcomeUnknown):
        mock.place(market("f"))
    assert mock.find("f", "ETH-BTC", AT).status == "FILLED"  # this one did


def test_the_same_seed_gives_the_same_run(engine, database_url) -> None:
    rates = {"rate_limit_rate": 0.2, "server_error_rate": 0.2, "reject_rate": 0.1, "seed": 7}

    def run(prefix: str) -> list[str]:
        mock, _ = exchange(engine, **rates)
        outcomes = []
        for n in range(40):
            try:
                outcomes.append(mock.place(market(f"{prefix}{n}")).status)
            except Exception as error:  # the outcome is the point
                outcomes.append(type(error).__name__)
        return outcomes

    first, second = run("x"), run("y")
    assert first == second
    assert {"FILLED", "FAILED", "RateLimited", "ExchangeUnavailable"} <= set(first)


def test_latency_is_slept_off_the_caller(engine) -> None:
    slept: list[float] = []
    mock = MockExchange(
        engine, PRODUCTS, None, {"ETH-BTC": Quote(Decimal("0.09"), AT)}.get,
        MockSettings(latency_ms=100), sleep=slept.append,
    )  # fmt: skip
    mock.place(market("l"))
    assert len(slept) == 1 and 0.05 <= slept[0] <= 0.15


def test_the_book_survives_a_restart(engine) -> None:
    mock, _ = exchange(engine)
    resting = mock.place(limit("r", "0.085"))
    again, quotes = exchange(engine, price="0.5")  # a restarted executor, a new price
    assert again.place(limit("r", "0.085")) == resting
    assert [o.client_order_id for o in again.open_orders()] == ["r"]
    quotes["ETH-BTC"] = Quote(Decimal("0.08"), AT)
    assert again.on_quote("ETH-BTC") == 1


def priced(cid: str, price: str, at: datetime, side: str = "buy", **sizes: str) -> OrderRequest:
    """A market order carrying its intent's reference price and market time."""
    quote, base = sizes.get("quote"), sizes.get("base")
    return OrderRequest(
        cid, "ETH-BTC", side, "market",
        Decimal(quote) if quote else None, Decimal(base) if base else None,
        reference_price=Decimal(price), market_time=at,
    )  # fmt: skip


def test_fill_at_intent_fills_at_the_intent_price_and_time_with_slippage(engine) -> None:
    intent_time = datetime(2018, 1, 19, 12, 0, tzinfo=UTC)  # the market has moved on since
    mock, _ = exchange(engine, price="0.09", fill_at="intent", slippage_bps=Decimal(10))
    order = mock.place(priced("i", "0.08", intent_time, base="1"))
    (fill,) = [convert_fill(f) for f in mock.fills(order.exchange_order_id)]
    assert fill.price == Decimal("0.08008") and fill.time == intent_time
    assert mock.get(order.exchange_order_id).created_time == intent_time


def test_fill_at_latest_ignores_the_intent_price(engine) -> None:
    mock, _ = exchange(engine, price="0.09")
    order = mock.place(priced("l", "0.08", datetime(2018, 1, 19, tzinfo=UTC), base="1"))
    (fill,) = [convert_fill(f) for f in mock.fills(order.exchange_order_id)]
    assert fill.price == Decimal("0.09") and fill.time == AT


def test_fill_at_intent_without_an_intent_price_fills_at_the_latest(engine) -> None:
    mock, _ = exchange(engine, price="0.09", fill_at="intent")
    order = mock.place(market("n", base="1", quote=None))
    (fill,) = [convert_fill(f) for f in mock.fills(order.exchange_order_id)]
    assert fill.price == Decimal("0.09") and fill.time == AT


def test_fill_at_intent_judges_the_minimums_at_the_intent_price(engine) -> None:
    # 0.0001 quote buys 0.00125 ETH at 0.08 (above the 0.001 minimum) but not at 0.2.
    mock, _ = exchange(engine, price="0.2", fill_at="intent")
    order = mock.place(priced("m", "0.08", AT, quote="0.0001"))
    assert order.status == "FILLED"
    assert mock.place(market("m2", quote="0.0001")).status == "FAILED"
