"""The ring trades through the executor's own core (tests/outcomes/exchange.py): fills, fees,
prices and statuses are the mock exchange's and the order state machine's, not the ring's."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from services.executor.orders import fee_for
from tests.outcomes.ring import INCREMENT, RING_PRODUCT, World, new_world

TAKER = Decimal("0.006")
MAKER = Decimal("0.004")


def bought(fill: str) -> World:
    world = new_world()
    world.tick(1, Decimal(0), "full")
    world.inject("buy", fill)  # type: ignore[arg-type]
    return world


def statuses(world: World) -> list[str]:
    return [event.status for event in world.exchange.events]


def test_a_market_fill_is_priced_at_the_intent_and_pays_the_taker_fee() -> None:
    world = bought("full")
    intent = world.intents[-1]
    [fill] = world.fills
    assert intent.reference_price is not None
    assert fill.price == intent.reference_price
    assert intent.quote_size is not None
    assert fill.size == (intent.quote_size / fill.price).quantize(INCREMENT, ROUND_DOWN)
    assert fill.fee == fee_for(fill.size * fill.price, TAKER, RING_PRODUCT) > 0
    assert statuses(world) == ["submitted", "filled"]
    held = world.book()
    assert held is not None and held.quantity == fill.size


def test_an_order_placed_after_the_market_moved_fills_at_the_intents_price() -> None:
    world = bought("full")
    intent = world.intents[-1]
    world.price = world.price * 2  # the latest price runs ahead of the order
    order = world.exchange.place(intent, "full", world.now)
    assert order.state.status == "filled"
    assert {fill.price for fill in order.state.known_fills} == {intent.reference_price}


def test_a_partial_fill_rests_fills_as_maker_on_a_crossing_price_then_is_cancelled() -> None:
    world = bought("partial")
    [order] = world.exchange.orders
    [first] = world.fills
    assert order.state.status == "partially_filled"
    assert first.fee == fee_for(first.size * first.price, TAKER, RING_PRODUCT)
    world.tick(1, Decimal(0), "full")  # at the buy's limit: the mock fills a share of the rest
    first, rest = world.fills
    assert rest.price == first.price
    assert rest.fee == fee_for(rest.size * rest.price, MAKER, RING_PRODUCT)
    ordered = world.exchange.mock.get(order.state.exchange_order_id or "")
    assert ordered.status == "CANCELLED"  # the rest's time-to-live: one tick
    assert order.state.status == "cancelled"
    assert [fill.trade_id for fill in order.state.known_fills] == [first.trade_id, rest.trade_id]
    # One report from the exchange: the cancel event carries the maker fill that came before it.
    assert statuses(world) == ["submitted", "partially_filled", "cancelled"]
    assert [fill.trade_id for fill in world.exchange.events[-1].fills] == [rest.trade_id]


def test_a_rest_the_price_does_not_reach_is_cancelled_at_the_next_tick_with_its_fills() -> None:
    world = bought("partial")
    world.tick(1, Decimal(2), "full")  # above the buy's limit: no match
    [order] = world.exchange.orders
    assert order.state.status == "cancelled"
    assert len(world.fills) == 1
    assert world.exchange.events[-1].filled_size == world.fills[0].size
    world.check(stop_within=6, flat_within=6)
    assert world.violations == []


def test_a_rejected_order_fails_with_the_mocks_reason_and_no_fills() -> None:
    world = bought("fail")
    [order] = world.exchange.orders
    assert order.state.status == "failed"
    assert world.fills == []
    assert statuses(world) == ["submitted", "failed"]
    assert world.exchange.net_filled() == 0
