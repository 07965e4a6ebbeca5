"""Order sizing by the product's rules and the events an exchange answer means."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.executor.orders import MarketFill, fill_market_order, lifecycle_events, refusal_event
from shared.catalog import Product
from shared.contracts import Fill, OrderApproved, Reason, TradeIntent

NOW = datetime(2018, 1, 20, 12, 0, tzinfo=UTC)
PRODUCT = Product(
    base_min_size=Decimal("0.001"),
    base_increment=Decimal("0.00000001"),
    quote_increment=Decimal("0.00000001"),
    quote_min_size=Decimal("0.0001"),
)


def fill(**kw: object) -> MarketFill | Reason:
    args = {
        "price": Decimal("0.09"),
        "quote_size": None,
        "base_size": None,
        "product": PRODUCT,
        "fee_rate": Decimal("0.006"),
    }
    return fill_market_order(**(args | kw))


def test_a_quote_sized_buy_rounds_the_size_down_to_the_increment() -> None:
    result = fill(quote_size=Decimal("0.01"))
    assert isinstance(result, MarketFill)
    assert result.size == Decimal("0.11111111")  # 0.01 / 0.09 = 0.111111111..., rounded down


def test_fees_round_up_so_they_are_never_undercounted() -> None:
    result = fill(base_size=Decimal("0.11111111"))
    assert isinstance(result, MarketFill)
    # 0.11111111 * 0.09 * 0.006 = 0.0000599999994, up to the quote increment
    assert result.fee == Decimal("0.00006000")


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"base_size": Decimal("0.0009")}, "BELOW_MIN_SIZE"),
        ({"quote_size": Decimal("0.00008")}, "BELOW_MIN_SIZE"),
        ({"base_size": Decimal("0.001"), "price": Decimal("0.05")}, "BELOW_MIN_NOTIONAL"),
    ],
)
def test_orders_below_the_product_minimums_are_refused_with_the_reason(kw: dict, code: str) -> None:
    result = fill(**kw)
    assert isinstance(result, Reason) and result.code == code


def approval() -> OrderApproved:
    intent = TradeIntent(
        message_id="i-1", correlation_id="i-1", time=NOW, intent_id="i-1", signal_id="s",
        bot_id="bot-1", product_id="ETH-BTC", action="entry", side="buy",
        quote_size=Decimal("0.01"), temperature=Decimal(80), band="hot",
        reason=Reason(code="SIGNAL", message="t"), reference_price=Decimal("0.09"), market_time=NOW,
    )  # fmt: skip
    return OrderApproved(
        message_id="d-1", correlation_id="i-1", time=NOW, intent=intent,
        client_order_id="c-1", mode="mock", decided_at=NOW,
    )  # fmt: skip


def test_a_filled_answer_is_submitted_then_filled_with_its_fills() -> None:
    the_fill = Fill(
        trade_id="t", price=Decimal("0.09"), size=Decimal("0.1"), fee=Decimal(0), time=NOW
    )
    events = lifecycle_events(
        approval=approval(), exchange_order_id="x-1", status="FILLED", fills=(the_fill,),
        reason=None, fallback_time=NOW,
    )  # fmt: skip
    assert [e.status for e in events] == ["submitted", "filled"]
    assert events[1].fills == [the_fill] and events[1].filled_size == Decimal("0.1")
    assert {e.correlation_id for e in events} == {"i-1"}
    assert len({e.message_id for e in events}) == 2


def test_a_failed_answer_carries_the_exchange_reason() -> None:
    reason = Reason(code="NO_MARKET_PRICE", message="no price")
    events = lifecycle_events(
        approval=approval(),
        exchange_order_id="x-1",
        status="FAILED",
        fills=(),
        reason=reason,
        fallback_time=NOW,
    )
    assert [e.status for e in events] == ["submitted", "failed"] and events[1].reason == reason


def test_event_ids_are_stable_so_a_republish_is_a_duplicate() -> None:
    first = lifecycle_events(
        approval=approval(),
        exchange_order_id="x",
        status="FAILED",
        fills=(),
        reason=None,
        fallback_time=NOW,
    )
    again = lifecycle_events(
        approval=approval(),
        exchange_order_id="x",
        status="FAILED",
        fills=(),
        reason=None,
        fallback_time=NOW,
    )
    assert [e.message_id for e in first] == [e.message_id for e in again]
    refused = refusal_event(approval(), Reason(code="MODE_MISMATCH", message="m"))
    assert refused.status == "failed" and refused.message_id == first[1].message_id
