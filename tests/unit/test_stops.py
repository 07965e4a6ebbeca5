"""The stop on the exchange (pure): the stop a position should have, and desired vs live -> what
to do, so that there are never two live stops and never one larger than the holding."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from shared.catalog import Bot, Product
from shared.contracts import PositionUpdate, Reason
from shared.stops import (
    STOP_BELOW_MINIMUM,
    LiveStop,
    StopOrder,
    cancel_before_sell,
    desired_stop,
    is_stop_intent,
    plan,
    stop_intent_id,
)

NOW = datetime(2026, 1, 5, tzinfo=UTC)
PRODUCT = Product(
    base_min_size=Decimal("0.0001"),
    base_increment=Decimal("0.00000001"),
    quote_increment=Decimal("0.01"),
    quote_min_size=Decimal("1"),
)
BOT = Bot(
    product_id="BTC-USD",
    quote_size=Decimal(100),
    stop_loss_pct=Decimal(2),
    stop_on_exchange=True,
    stop_limit_offset_pct=Decimal("0.5"),
)


def position(quantity: str = "0.123456789", break_even: str = "50000", status: str = "open"):
    return PositionUpdate(
        message_id="p", correlation_id="p", time=NOW, bot_id="b", product_id="BTC-USD",
        mode="mock", position_id="b-mock-1" if status == "open" else None, status=status,
        quantity=Decimal(quantity) if status == "open" else Decimal(0),
        average_entry_price=Decimal(break_even) if status == "open" else None,
        break_even_price=Decimal(break_even) if status == "open" else None,
        cost_basis=Decimal(0), realized_pnl=Decimal(0), fees_paid=Decimal(0), tranches=[],
        sequence=3,
    )  # fmt: skip


def stop(size: str, status: str = "resting", cid: str = "s1") -> LiveStop:
    return LiveStop(
        cid,
        StopOrder(Decimal(size), Decimal("49000.00"), Decimal("48755.00")),
        status,  # type: ignore[arg-type]  # a literal from the table
    )


def test_the_stop_sits_at_the_stop_loss_below_break_even_sized_down_to_the_holding() -> None:
    wanted = desired_stop(BOT, position(), PRODUCT)
    assert wanted == StopOrder(
        size=Decimal("0.12345678"),  # rounded down: never larger than the holding
        stop_price=Decimal("49000.00"),  # 2 % below 50,000
        limit_price=Decimal("48755.00"),  # 0.5 % below the stop
    )


def test_prices_round_down_to_the_quote_increment() -> None:
    wanted = desired_stop(BOT, position(break_even="333.333"), PRODUCT)
    assert isinstance(wanted, StopOrder)
    assert wanted.stop_price == Decimal("326.66")  # 326.66634
    assert wanted.limit_price == Decimal("325.02")  # 325.0299...


def test_no_stop_without_the_opt_in_or_without_a_position() -> None:
    plain = BOT.model_copy(update={"stop_on_exchange": False})
    assert desired_stop(plain, position(), PRODUCT) is None
    assert desired_stop(BOT, position(status="flat"), PRODUCT) is None
    assert desired_stop(BOT, None, PRODUCT) is None


def test_a_holding_below_the_minimum_says_why_it_has_no_stop() -> None:
    wanted = desired_stop(BOT, position(quantity="0.00001"), PRODUCT)
    assert isinstance(wanted, Reason) and wanted.code == STOP_BELOW_MINIMUM


def test_the_opt_in_needs_a_stop_loss() -> None:
    with pytest.raises(ValidationError, match="stop_on_exchange needs stop_loss_pct"):
        Bot(product_id="BTC-USD", quote_size=Decimal(1), stop_on_exchange=True)


WANT = StopOrder(Decimal("0.1"), Decimal("49000.00"), Decimal("48755.00"))


@pytest.mark.parametrize(
    ("live", "cancel", "place", "code"),
    [
        ([], (), WANT, "STOP_PLACED"),
        ([stop("0.1")], (), None, "STOP_KEPT"),
        # an add: the smaller stop goes first, the larger one only once its cancel is confirmed
        ([stop("0.05")], ("s1",), None, "STOP_REPLACED"),
        ([stop("0.05", "cancelling")], (), None, "STOP_WAITING"),
        # a stop asked and not yet confirmed: never a second one beside it
        ([stop("0.1", "pending")], (), None, "STOP_WAITING"),
        ([stop("0.05", "pending")], (), None, "STOP_WAITING"),
        # two live stops (found after a crash): keep the right one, cancel the other
        ([stop("0.1"), stop("0.05", cid="s2")], ("s2",), None, "STOP_KEPT"),
        ([stop("0.2"), stop("0.05", cid="s2")], ("s1", "s2"), None, "STOP_REPLACED"),
        ([stop("0.05", "cancelling"), stop("0.2", cid="s2")], ("s2",), None, "STOP_WAITING"),
    ],
)
def test_desired_vs_live(live, cancel, place, code) -> None:
    decided = plan(WANT, live)
    assert (decided.cancel, decided.place, decided.reason.code) == (cancel, place, code)
    assert not (decided.cancel and decided.place), "never place while cancelling"


def test_a_closed_position_cancels_its_stop_and_places_none() -> None:
    decided = plan(None, [stop("0.1")])
    assert (decided.cancel, decided.place, decided.reason.code) == (
        ("s1",),
        None,
        "STOP_NOT_WANTED",
    )
    assert plan(None, []).place is None


def test_a_reason_for_no_stop_is_passed_on() -> None:
    why = Reason(code=STOP_BELOW_MINIMUM, message="too small")
    assert plan(why, []).reason == why
    assert plan(why, [stop("0.1")]).cancel == ("s1",)


def test_a_place_only_ever_follows_a_confirmed_cancel() -> None:
    """Walk desired stops through a sequence of positions, confirming each step as the exchange
    would: at no step is a stop placed while another is live."""
    live: list[LiveStop] = []
    placed: list[StopOrder] = []
    for size in ("0.1", "0.1", "0.25", "0.05", "0.05"):
        wanted = StopOrder(Decimal(size), WANT.stop_price, WANT.limit_price)
        for _ in range(3):  # plan, let the exchange answer, plan again
            decided = plan(wanted, live)
            if decided.place is not None:
                assert not live
                placed.append(decided.place)
                live = [LiveStop(f"s{len(placed)}", decided.place, "resting")]
            live = [s for s in live if s.client_order_id not in decided.cancel]
        assert [s.order for s in live] == [wanted]
    assert [p.size for p in placed] == [Decimal("0.1"), Decimal("0.25"), Decimal("0.05")]


def test_every_live_stop_is_cancelled_before_another_sell() -> None:
    assert cancel_before_sell([stop("0.1"), stop("0.1", "pending", "s2")]) == ("s1", "s2")
    assert cancel_before_sell([stop("0.1", "cancelling")]) == ()


def test_the_stop_is_named_by_the_position_and_its_sequence() -> None:
    assert stop_intent_id("b", "b-mock-1", 3) == stop_intent_id("b", "b-mock-1", 3)
    assert stop_intent_id("b", "b-mock-1", 3) != stop_intent_id("b", "b-mock-1", 4)
    assert is_stop_intent(stop_intent_id("b", "b-mock-1", 3)) and not is_stop_intent("b:1")
