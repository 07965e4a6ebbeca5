"""The order state machine, Coinbase's statuses, fill conversion, sizing, refusals and halts:
pure, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from services.executor.orders import (
    NEW,
    ExchangeFill,
    ExchangeReport,
    MarketFill,
    OpenOrder,
    OrderIdentity,
    OrderSpec,
    OrderState,
    advance,
    cancels_for,
    convert_fill,
    fill_market_order,
    limit_order_expired,
    refusal_event,
    refusal_reason,
    size_order,
    unrecognised_fills,
)
from shared.catalog import Product
from shared.contracts import Fill, OrderApproved, Reason, SafetyEvent, TradeIntent

D = Decimal
NOW = datetime(2018, 1, 20, 12, 0, tzinfo=UTC)
PRODUCT = Product(
    base_min_size=Decimal("0.001"),
    base_increment=Decimal("0.00000001"),
    quote_increment=Decimal("0.00000001"),
    quote_min_size=Decimal("0.0001"),
)
BTC_USD = Product(
    base_min_size=Decimal("0.00000001"),
    base_increment=Decimal("0.00000001"),
    quote_increment=Decimal("0.01"),
    quote_min_size=Decimal("1"),
)
ORDER = OrderIdentity(
    bot_id="bot-1", product_id="ETH-BTC", mode="mock", intent_id="i-1",
    client_order_id="c-1", action="entry", side="buy",
)  # fmt: skip


def a_fill(n: int, size: str = "0.1") -> Fill:
    return Fill(
        trade_id=f"t-{n}", price=Decimal("0.09"), size=Decimal(size), fee=Decimal("0.0001"),
        liquidity="maker", time=NOW + timedelta(seconds=n),
    )  # fmt: skip


# -- fills ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "in_quote", "base"),
    [
        ("100", True, "0.002"),  # 100 USD at 50,000 is 0.002 BTC, not 100 BTC
        ("0.002", False, "0.002"),
        ("33.33", True, "0.0006666"),
    ],
)
def test_a_fill_sized_in_quote_is_converted_to_base(size: str, in_quote: bool, base: str) -> None:
    fill = convert_fill(
        ExchangeFill(
            trade_id="t", price=Decimal("50000"), size=Decimal(size), size_in_quote=in_quote,
            commission=Decimal("0.6"), liquidity_indicator="TAKER", trade_time=NOW,
        )
    )  # fmt: skip
    assert fill.size == Decimal(base)
    assert fill.fee == Decimal("0.6") and fill.liquidity == "taker" and fill.price == 50000


def test_a_maker_fill_says_maker() -> None:
    fill = convert_fill(ExchangeFill("t", Decimal(1), Decimal(1), False, Decimal(0), "MAKER", NOW))
    assert fill.liquidity == "maker"


def test_fill_records_of_an_undocumented_type_are_found_and_never_converted() -> None:
    def record(trade_type: str) -> ExchangeFill:
        return ExchangeFill("t", D(1), D(1), False, D(0), "TAKER", NOW, "e", trade_type)

    known = [record(kind) for kind in ("FILL", "reversal", "CORRECTION", "SYNTHETIC")]
    odd = [record("LIQUIDATION"), record("UNKNOWN_TRADE_TYPE"), record("")]
    assert unrecognised_fills(known + odd) == odd
    assert [convert_fill(fill).trade_type for fill in known] == [
        "FILL", "REVERSAL", "CORRECTION", "SYNTHETIC"
    ]  # fmt: skip
    for fill in odd:
        with pytest.raises(ValidationError):
            convert_fill(fill)  # never read as a plain fill


# -- sizing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        (
            {"quote_size": Decimal("100.005")},
            OrderSpec("market", "buy", quote_size=Decimal("100.00")),
        ),
        (
            {"base_size": Decimal("0.123456789"), "side": "sell"},
            OrderSpec("market", "sell", base_size=Decimal("0.12345678")),
        ),
        (
            {"order_type": "limit", "base_size": D("0.01"), "limit_price": D("50000.009")},
            OrderSpec("limit", "buy", base_size=D("0.01"), limit_price=D("50000.00")),
        ),
        (
            {"order_type": "limit", "side": "sell", "base_size": Decimal("0.01"),
             "limit_price": Decimal("50000.001")},
            OrderSpec("limit", "sell", base_size=Decimal("0.01"), limit_price=Decimal("50000.01")),
        ),
        (
            {"order_type": "limit", "quote_size": D("100"), "limit_price": D("30000")},
            OrderSpec("limit", "buy", base_size=D("0.00333333"), limit_price=D("30000.00")),
        ),
    ],
)  # fmt: skip
def test_sizes_and_prices_are_rounded_to_the_product_increments(
    kw: dict, expected: OrderSpec
) -> None:
    args = {
        "order_type": "market", "side": "buy", "quote_size": None, "base_size": None,
        "limit_price": None, "reference_price": None, "product": BTC_USD,
    }  # fmt: skip
    assert size_order(**(args | kw)) == expected


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"quote_size": Decimal("0.5")}, "BELOW_MIN_NOTIONAL"),
        ({"base_size": Decimal("0.000000001"), "side": "sell"}, "BELOW_MIN_SIZE"),
        (
            {
                "order_type": "limit",
                "base_size": Decimal("0.00001"),
                "limit_price": Decimal("50000"),
            },
            "BELOW_MIN_NOTIONAL",
        ),
        (
            {"base_size": Decimal("0.00001"), "reference_price": Decimal("50000")},
            "BELOW_MIN_NOTIONAL",
        ),
    ],
)
def test_orders_below_the_product_minimums_are_refused_with_the_reason(kw: dict, code: str) -> None:
    args = {
        "order_type": "market", "side": "buy", "quote_size": None, "base_size": None,
        "limit_price": None, "reference_price": None, "product": BTC_USD,
    }  # fmt: skip
    result = size_order(**(args | kw))
    assert isinstance(result, Reason) and result.code == code and result.message


def fill(**kw: object) -> MarketFill | Reason:
    args = {
        "price": Decimal("0.09"), "quote_size": None, "base_size": None, "product": PRODUCT,
        "fee_rate": Decimal("0.006"),
    }  # fmt: skip
    return fill_market_order(**(args | kw))


def test_a_quote_sized_market_fill_rounds_the_size_down_to_the_increment() -> None:
    result = fill(quote_size=Decimal("0.01"))
    assert isinstance(result, MarketFill)
    assert result.size == Decimal("0.11111111")  # 0.01 / 0.09 = 0.111111111..., rounded down


def test_fees_round_up_so_they_are_never_undercounted() -> None:
    result = fill(base_size=Decimal("0.11111111"))
    assert isinstance(result, MarketFill)
    # 0.11111111 * 0.09 * 0.006 = 0.0000599999994, up to the quote increment
    assert result.fee == Decimal("0.00006000")


# -- approvals ------------------------------------------------------------------------------------


def approval(mode: str = "mock", decided_at: datetime = NOW) -> OrderApproved:
    intent = TradeIntent(
        message_id="i-1", correlation_id="i-1", time=NOW, intent_id="i-1", signal_id="s",
        bot_id="bot-1", product_id="ETH-BTC", action="entry", side="buy",
        quote_size=Decimal("0.01"), temperature=Decimal(80), band="hot",
        reason=Reason(code="SIGNAL", message="t"), reference_price=Decimal("0.09"), market_time=NOW,
    )  # fmt: skip
    return OrderApproved(
        message_id="d-1", correlation_id="i-1", time=NOW, intent=intent,
        client_order_id="c-1", mode=mode, decided_at=decided_at,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "age_s", "ttl_s", "code"),
    [
        ("mock", 5, 120, None),
        ("production", 5, 120, "MODE_MISMATCH"),
        ("mock", 121, 120, "APPROVAL_EXPIRED"),
        ("mock", 10_000, None, None),
    ],
)
def test_approvals_for_another_mode_or_past_their_time_to_live_are_refused(
    mode: str, age_s: int, ttl_s: int | None, code: str | None
) -> None:
    ttl = timedelta(seconds=ttl_s) if ttl_s else None
    reason = refusal_reason(approval(mode), "mock", NOW + timedelta(seconds=age_s), ttl)
    assert (reason.code if reason else None) == code


def test_a_refusal_is_a_failed_event_with_the_reason() -> None:
    reason = Reason(code="MODE_MISMATCH", message="m")
    event = refusal_event(approval(), reason)
    assert event.status == "failed" and event.reason == reason
    assert event.message_id == "order-c-1-failed"


@pytest.mark.parametrize(("age_s", "expired"), [(299, False), (300, True), (301, True)])
def test_a_limit_order_expires_at_its_time_to_live(age_s: int, expired: bool) -> None:
    placed = NOW
    assert (
        limit_order_expired(placed, timedelta(seconds=300), NOW + timedelta(seconds=age_s))
        is expired
    )


# -- halts ----------------------------------------------------------------------------------------

OPEN = [
    OpenOrder("a-entry", "bot-a", "entry", "open"),
    OpenOrder("a-exit", "bot-a", "exit", "partially_filled"),
    OpenOrder("b-entry", "bot-b", "entry", "new"),
    OpenOrder("b-done", "bot-b", "entry", "filled"),
]


def safety(state: str | None, bot: str | None, code: str = "HALT") -> SafetyEvent:
    return SafetyEvent(
        message_id="s", correlation_id="s", time=NOW, code=code, message="m", bot_id=bot,
        state=state, caused_by="operator",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("event", "cancelled"),
    [
        (safety("halted", "bot-a"), ["a-entry", "a-exit"]),
        (safety("halted", None), ["a-entry", "a-exit", "b-entry"]),
        (safety("reducing", None, "BREAKER"), ["a-entry", "b-entry"]),
        (safety("active", None, "RESUME"), []),
        (safety(None, "bot-a", "LIMIT_REACHED"), []),
    ],
)
def test_a_halt_cancels_the_open_orders_it_covers(event: SafetyEvent, cancelled: list) -> None:
    assert cancels_for(event, OPEN) == cancelled


# -- the state machine ----------------------------------------------------------------------------


def step(current: str, known: tuple = (), **report: object):
    args = {"exchange_order_id": "x-1", "status": "OPEN"} | report
    return advance(ORDER, OrderState(current, known, "x-1"), ExchangeReport(**args), NOW)


@pytest.mark.parametrize(
    ("status", "known", "report", "to", "events"),
    [
        (NEW, (), {"status": "PENDING"}, "submitted", ["submitted"]),
        (NEW, (), {"status": "QUEUED"}, "submitted", ["submitted"]),
        (NEW, (), {"status": "OPEN"}, "open", ["submitted", "open"]),
        (NEW, (), {"status": "FILLED", "fills": (a_fill(1),), "number_of_fills": 1},
         "filled", ["submitted", "filled"]),
        (NEW, (), {"status": "FAILED"}, "failed", ["submitted", "failed"]),
        ("submitted", (), {"status": "OPEN"}, "open", ["open"]),
        ("open", (), {"status": "OPEN"}, "open", []),
        ("open", (), {"status": "OPEN", "fills": (a_fill(1),)}, "partially_filled",
         ["partially_filled"]),
        ("partially_filled", (a_fill(1),), {"status": "OPEN", "fills": (a_fill(1),)},
         "partially_filled", []),
        ("partially_filled", (a_fill(1),), {"status": "OPEN", "fills": (a_fill(1), a_fill(2))},
         "partially_filled", ["partially_filled"]),
        ("partially_filled", (a_fill(1),),
         {"status": "FILLED", "fills": (a_fill(1), a_fill(2)), "number_of_fills": 2},
         "filled", ["filled"]),
        ("open", (), {"status": "CANCEL_QUEUED"}, "pending_cancel", []),
        ("partially_filled", (a_fill(1),), {"status": "CANCEL_QUEUED", "fills": (a_fill(1),)},
         "pending_cancel", []),
        ("open", (), {"status": "EDIT_QUEUED"}, "open", []),
        ("pending_cancel", (), {"status": "OPEN", "fills": (a_fill(1),)}, "pending_cancel",
         ["partially_filled"]),  # a cancel is pending and the order still fills
        ("pending_cancel", (), {"status": "CANCELLED"}, "cancelled", ["cancelled"]),
        ("unknown_at_exchange", (), {"status": "OPEN"}, "open", ["open"]),
        ("open", (), {"status": "CANCELLED"}, "cancelled", ["cancelled"]),
        ("partially_filled", (a_fill(1),), {"status": "CANCELLED", "fills": (a_fill(1),)},
         "cancelled", ["cancelled"]),
        ("open", (), {"status": "EXPIRED"}, "expired", ["expired"]),
        ("open", (), {"status": "UNKNOWN_ORDER_STATUS"}, "open", []),
        ("open", (), {"status": "PENDING"}, "open", []),  # never backwards
        ("filled", (a_fill(1),), {"status": "OPEN"}, "filled", []),  # final stays final
        ("cancelled", (), {"status": "FILLED"}, "cancelled", []),
    ],
)  # fmt: skip
def test_the_order_state_machine(status, known, report, to, events) -> None:
    result = step(status, known, **report)
    assert result.status == to
    assert [event.status for event in result.events] == events


def test_an_order_is_final_only_once_every_fill_the_exchange_counts_is_known() -> None:
    waiting = step("open", (), status="FILLED", fills=(a_fill(1),), number_of_fills=2)
    assert waiting.status == "partially_filled" and waiting.waiting_for_fills
    done = step(
        "partially_filled", (a_fill(1),), status="FILLED", fills=(a_fill(1), a_fill(2)),
        number_of_fills=2,
    )  # fmt: skip
    assert done.status == "filled" and not done.waiting_for_fills


def test_an_order_waiting_for_fills_is_made_final_when_told_to_stop_waiting() -> None:
    result = advance(
        ORDER, OrderState("open", (), "x-1"),
        ExchangeReport("x-1", "FILLED", (a_fill(1),), number_of_fills=2), NOW, stop_waiting=True,
    )  # fmt: skip
    assert result.status == "filled" and not result.waiting_for_fills


def test_the_final_event_carries_the_new_fills_and_the_total_size() -> None:
    result = step(
        "partially_filled", (a_fill(1, "0.4"),), status="CANCELLED",
        fills=(a_fill(1, "0.4"), a_fill(2, "0.1")), number_of_fills=2,
        reason=Reason(code="LIMIT_TTL", message="not filled in time"),
    )  # fmt: skip
    (event,) = result.events
    assert event.status == "cancelled" and [f.trade_id for f in event.fills] == ["t-2"]
    assert event.filled_size == Decimal("0.5") and event.reason.code == "LIMIT_TTL"
    assert event.time == a_fill(2).time  # event time: the last fill's


def test_a_failed_order_without_a_reason_gets_one() -> None:
    (_, failed) = step(NEW, status="FAILED").events
    assert failed.reason is not None and failed.reason.code == "EXCHANGE_FAILED"


def test_each_change_is_published_once_with_stable_ids() -> None:
    first = step("open", (), status="OPEN", fills=(a_fill(1),))
    again = step("open", (), status="OPEN", fills=(a_fill(1),))
    assert [e.message_id for e in first.events] == [e.message_id for e in again.events]
    replayed = step("partially_filled", first.fills, status="OPEN", fills=(a_fill(1),))
    assert replayed.events == []
    ids = [
        e.message_id
        for s in (step(NEW, status="OPEN"), first, step("partially_filled", first.fills,
                  status="FILLED", fills=(a_fill(1), a_fill(2)), number_of_fills=2))
        for e in s.events
    ]  # fmt: skip
    assert len(ids) == len(set(ids)) == 4


def test_a_quote_amount_with_the_fee_inside_buys_only_the_rest() -> None:
    from services.executor.orders import quote_includes_fee

    outside = ExchangeFill("t", D(50000), D("99.4035"), True, D("0.596421"), "TAKER", NOW)
    inside = ExchangeFill("t", D(50000), D("99.999921"), True, D("0.596421"), "TAKER", NOW)
    total = D("99.999921")
    assert not quote_includes_fee([outside], True, total)
    assert quote_includes_fee([inside], True, total)
    assert not quote_includes_fee([inside], False, total)  # not a fee-inclusive order
    assert convert_fill(outside).size == convert_fill(inside, True).size == D("0.00198807")
