"""The intent that asks a position's stop on the exchange (pure), and when a stop that ended is
asked again."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.signal.exchange_stop import (
    MAX_ATTEMPTS,
    ExchangeStop,
    asks_again,
    stands_down,
    stop_intent,
)
from services.signal.handlers import SignalHandlers
from services.signal.intents import Market
from shared.catalog import Bot, Product
from shared.contracts import (
    OrderEvent,
    OrderRejected,
    PositionUpdate,
    Reason,
    Ticker,
    TradeIntent,
)
from shared.stops import StopOrder
from tests.support.signal_harness import signal_harness

NOW = datetime(2026, 1, 5, tzinfo=UTC)
PRODUCT = Product(
    base_min_size=Decimal("0.001"), base_increment=Decimal("0.00000001"),
    quote_increment=Decimal("0.00000001"), quote_min_size=Decimal("0.0001"),
)  # fmt: skip
BOT = Bot(
    product_id="ETH-BTC", quote_size=Decimal("0.01"), stop_loss_pct=Decimal(2),
    stop_on_exchange=True,
)  # fmt: skip
POSITION = PositionUpdate(
    message_id="p", correlation_id="p", time=NOW, bot_id="b", product_id="ETH-BTC",
    mode="mock", position_id="b-mock-1", status="open", quantity=Decimal("0.11"),
    average_entry_price=Decimal("0.09"), break_even_price=Decimal("0.09"),
    cost_basis=Decimal("0.0099"), realized_pnl=Decimal(0), fees_paid=Decimal(0), tranches=[],
    sequence=4,
)  # fmt: skip


def ask(price: str | None = "0.09", attempt: int = 0, bot: Bot = BOT):
    market = Market(Decimal(price), NOW) if price else None
    return stop_intent(
        bot_id="b", bot=bot, position=POSITION, product=PRODUCT, market=market,
        temperature=Decimal(50), attempt=attempt,
    )  # fmt: skip


def test_the_stop_intent_is_a_stop_limit_exit_named_by_the_position_state() -> None:
    intent = ask()
    assert isinstance(intent, TradeIntent)
    assert intent.intent_id == "stop:b:b-mock-1:4" == intent.signal_id
    assert (intent.order_type, intent.side, intent.action) == ("stop_limit", "sell", "exit")
    assert intent.base_size == Decimal("0.11") and intent.stop_price == Decimal("0.0882")
    assert intent.limit_price == Decimal("0.087759") and intent.reason.code == "STOP_ON_EXCHANGE"
    again = ask(attempt=1)
    assert isinstance(again, TradeIntent) and again.intent_id == "stop:b:b-mock-1:4:1"


def test_no_stop_without_a_price_or_below_the_stop_or_without_the_opt_in() -> None:
    missing = ask(None)
    assert isinstance(missing, Reason) and missing.code == "NO_MARKET_DATA"
    through = ask("0.0882")
    assert isinstance(through, Reason) and through.code == "STOP_ALREADY_THROUGH"
    assert ask(bot=BOT.model_copy(update={"stop_on_exchange": False})) is None


@pytest.mark.parametrize(
    ("status", "code", "attempts", "again"),
    [
        ("cancelled", None, 1, True),  # cancelled from outside
        ("failed", "STOP_PRICE_ABOVE_LAST_TRADE_PRICE", 1, True),  # refused by the exchange
        ("expired", None, 1, True),
        ("cancelled", "STOP_BEFORE_SELL", 1, False),  # another sell: the next position asks
        ("cancelled", "HALT", 1, False),  # tranche halt --cancel-stops
        ("open", None, 1, False),
        ("filled", None, 1, False),
        ("cancelled", None, MAX_ATTEMPTS, False),  # the signal's stop-loss protects it
    ],
)
def test_which_ended_stops_are_asked_again(status, code, attempts, again) -> None:
    assert asks_again(status, code, attempts) is again


def order_event(intent_id: str, status: str, code: str | None = None) -> OrderEvent:
    return OrderEvent(
        message_id=f"e-{status}", correlation_id=intent_id, time=NOW, bot_id="b",
        product_id="ETH-BTC", mode="mock", intent_id=intent_id, client_order_id="c",
        action="exit", side="sell", status=status,
        reason=Reason(code=code, message="why") if code else None,
    )  # fmt: skip


async def holding_with_a_stop_asked():
    """Bot ``b`` on ETH-BTC at 0.09, holding :data:`POSITION`: its first stop has been asked."""
    harness = signal_harness()
    handlers = harness.handlers
    handlers.products = {"ETH-BTC": PRODUCT}
    harness.bots.add("b", BOT)
    await handlers.evaluate_tick(Ticker(product_id="ETH-BTC", price=Decimal("0.09"), time=NOW))
    await handlers.keep_position(POSITION)
    return harness


async def test_the_signal_asks_one_stop_per_position_state_and_again_when_it_ends() -> None:
    harness = await holding_with_a_stop_asked()
    handlers = harness.handlers
    assert handlers.stops_asked["b"] == "stop:b:b-mock-1:4"
    assert harness.intents == []  # not told to a lock-step replay: a resting stop is not final
    await handlers.evaluate_tick(Ticker(product_id="ETH-BTC", price=Decimal("0.091"), time=NOW))
    assert handlers.stops_asked["b"] == "stop:b:b-mock-1:4"  # asked once per state
    await handlers.stop_ended(order_event("stop:b:b-mock-1:4", "cancelled"))  # from outside
    assert handlers.stops_asked["b"] == "stop:b:b-mock-1:4:1"
    await handlers.stop_ended(order_event("stop:b:b-mock-1:4:1", "cancelled", "STOP_BEFORE_SELL"))
    assert handlers.stops_asked["b"] == "stop:b:b-mock-1:4:1"  # meant: not asked again
    reason = handlers.stop_reasons["b"]
    assert reason is not None and reason.code == "STOP_ENDED"


async def test_the_signal_says_which_stop_it_asks_or_why_none_for_the_status_views() -> None:
    harness = signal_harness()
    handlers = harness.handlers
    handlers.products = {"ETH-BTC": PRODUCT}
    running = harness.bots.add("b", BOT)
    await handlers.keep_position(POSITION)  # no price yet: no stop asked, and why
    seen = handlers.asked_stop("b", running)
    assert seen is not None and seen.wanted() is None and seen.holding == Decimal("0.11")
    assert seen.reason is not None and seen.reason.code == "NO_MARKET_DATA"
    await handlers.evaluate_tick(Ticker(product_id="ETH-BTC", price=Decimal("0.09"), time=NOW))
    seen = handlers.asked_stop("b", running)
    assert seen is not None and seen.intent_id == "stop:b:b-mock-1:4"
    wanted = seen.wanted()
    assert wanted is not None and wanted.size == Decimal("0.11")
    assert wanted.stop_price == Decimal("0.0882")
    for attempt in range(MAX_ATTEMPTS):  # refused each time: the third is not asked again
        intent = "stop:b:b-mock-1:4" + (f":{attempt}" if attempt else "")
        await handlers.stop_ended(order_event(intent, "failed", "INSUFFICIENT_FUND"))
    seen = handlers.asked_stop("b", running)
    assert seen is not None and seen.wanted() is None and seen.reason is not None
    assert seen.reason.code == "STOP_ENDED"
    assert "failed (INSUFFICIENT_FUND), 3 time(s)" in seen.reason.message


async def test_a_bot_without_the_opt_in_or_without_a_position_is_not_listed() -> None:
    harness = signal_harness()
    handlers = harness.handlers
    handlers.products = {"ETH-BTC": PRODUCT}
    plain = harness.bots.add("p", BOT.model_copy(update={"stop_on_exchange": False}))
    await handlers.keep_position(POSITION.model_copy(update={"bot_id": "p"}))
    assert handlers.asked_stop("p", plain) is None
    assert handlers.asked_stop("b", harness.bots.add("b", BOT)) is None  # nothing held


def refused(intent_id: str, *codes: str, at: datetime = NOW) -> OrderRejected:
    intent = TradeIntent(
        message_id=f"m-{intent_id}", correlation_id=intent_id, time=at, intent_id=intent_id,
        signal_id=intent_id, bot_id="b", product_id="ETH-BTC", action="exit", side="sell",
        base_size=Decimal("0.11"), temperature=Decimal(50), band="warm",
        reason=Reason(code="STOP_ON_EXCHANGE", message="stop"), market_time=at,
    )  # fmt: skip
    reasons = [Reason(code=code, message=code) for code in codes]
    return OrderRejected(
        message_id=f"r-{intent_id}", correlation_id=intent_id, time=at, intent=intent,
        mode="mock", reasons=reasons, decided_at=at,
    )  # fmt: skip


async def test_a_stop_safety_refused_is_asked_again_until_one_is_approved() -> None:
    """Seen in the e2e ring under load: safety refused the stop while the entry was still in
    flight in its view (``ORDER_IN_FLIGHT``) and it was never asked again, so the position had
    no stop on the exchange."""
    harness = await holding_with_a_stop_asked()
    handlers = harness.handlers
    assert handlers.stops_asked["b"] == "stop:b:b-mock-1:4"
    await handlers.stop_refused(refused("stop:b:b-mock-1:4", "ORDER_IN_FLIGHT"))
    assert handlers.stops_asked["b"] == "stop:b:b-mock-1:4:1"  # at once, under a new id
    await handlers.stop_refused(refused("stop:b:b-mock-1:4:1", "ORDER_IN_FLIGHT"))
    assert "b" not in handlers.stops_asked  # the second refusal backs off ...
    reason = handlers.stop_reasons["b"]  # ... and says why there is no stop (tranche status)
    assert (
        reason is not None
        and reason.code == "STOP_REFUSED"
        and "ORDER_IN_FLIGHT" in (reason.message)
    )
    await handlers.evaluate_tick(Ticker(product_id="ETH-BTC", price=Decimal("0.09"), time=NOW))
    assert "b" not in handlers.stops_asked
    await handlers.stop_again("b", NOW)  # ... until safety says nothing is in flight
    assert handlers.stops_asked["b"] == "stop:b:b-mock-1:4:2"


async def test_a_stop_refused_by_a_halt_backs_off_in_event_time_not_in_a_loop() -> None:
    harness = await holding_with_a_stop_asked()
    handlers = harness.handlers
    await handlers.stop_refused(refused("stop:b:b-mock-1:4", "HALTED"))
    await handlers.stop_refused(refused("stop:b:b-mock-1:4:1", "HALTED"))
    await handlers.stop_again("b", NOW)  # readiness does not clear a halt
    later = NOW + timedelta(seconds=4)
    await handlers.evaluate_tick(Ticker(product_id="ETH-BTC", price=Decimal("0.09"), time=later))
    assert "b" not in handlers.stops_asked  # 5 s of market time after the second refusal
    later = NOW + timedelta(seconds=5)
    await handlers.evaluate_tick(Ticker(product_id="ETH-BTC", price=Decimal("0.09"), time=later))
    assert handlers.stops_asked["b"] == "stop:b:b-mock-1:4:2"
    await handlers.stop_refused(refused("stop:b:b-mock-1:4:1", "HALTED"))  # an old one: ignored
    assert handlers.stops_asked["b"] == "stop:b:b-mock-1:4:2"


# -- the signal's own stop-loss stands down while the exchange holds the stop --------------------

STOP_LOSS = Reason(code="STOP_LOSS", message="below the stop")
LIVE_STOP = ExchangeStop(
    "stop:b:b-mock-1:4", "b-mock-1", 4, StopOrder(Decimal("0.11"), Decimal("0.0882"),
    Decimal("0.087759")), "open",
)  # fmt: skip


@pytest.mark.parametrize(
    ("trigger", "stop", "price", "down"),
    [
        (STOP_LOSS, LIVE_STOP, "0.0882", True),  # through the stop, above its limit
        (STOP_LOSS, LIVE_STOP, "0.08776", True),
        (STOP_LOSS, replace(LIVE_STOP, status="partially_filled"), "0.088", True),
        (STOP_LOSS, LIVE_STOP, "0.087759", False),  # at its limit: it may rest unfilled
        (STOP_LOSS, LIVE_STOP, "0.08", False),  # gapped through its limit
        (STOP_LOSS, replace(LIVE_STOP, status="asked"), "0.088", False),  # not confirmed yet
        (STOP_LOSS, replace(LIVE_STOP, status="submitted"), "0.088", False),
        (STOP_LOSS, replace(LIVE_STOP, status="cancelled"), "0.088", False),  # ended
        (STOP_LOSS, replace(LIVE_STOP, status="failed"), "0.088", False),  # refused
        (STOP_LOSS, replace(LIVE_STOP, status="filled"), "0.088", True),  # sold: flat follows
        (STOP_LOSS, replace(LIVE_STOP, status="filled"), "0.08", True),
        (STOP_LOSS, replace(LIVE_STOP, status="filled", sequence=3), "0.088", False),
        (STOP_LOSS, None, "0.088", False),  # no stop asked
        (STOP_LOSS, replace(LIVE_STOP, sequence=3), "0.088", False),  # an earlier state's stop
        (STOP_LOSS, replace(LIVE_STOP, position_id="b-mock-0"), "0.088", False),
        (Reason(code="TAKE_PROFIT", message="up"), LIVE_STOP, "0.1", False),  # other exits act
        (Reason(code="TRAILING_STOP", message="down"), LIVE_STOP, "0.088", False),
        (Reason(code="FLATTEN", message="operator"), LIVE_STOP, "0.088", False),
        (None, LIVE_STOP, "0.088", False),
    ],
)
def test_the_signal_stop_loss_stands_down_only_above_the_live_stops_limit(
    trigger, stop, price, down
) -> None:
    assert stands_down(trigger, POSITION, stop, Decimal(price)) is down


def test_a_late_event_never_brings_an_ended_stop_back_to_life() -> None:
    ended = LIVE_STOP.heard("cancelled")
    assert ended.status == "cancelled" and ended.heard("open") is ended
    assert replace(LIVE_STOP, status="asked").heard("open") == LIVE_STOP


def stop_event(status: str, intent_id: str = "stop:b:b-mock-1:4") -> OrderEvent:
    return order_event(intent_id, status).model_copy(update={"message_id": f"e-{status}"})


def tick(price: str, seconds: int = 0) -> Ticker:
    return Ticker(product_id="ETH-BTC", price=Decimal(price), time=NOW + timedelta(seconds=seconds))


async def stopped_position():
    harness = signal_harness()
    harness.handlers.products = {"ETH-BTC": PRODUCT}
    harness.bots.add("b", BOT)
    await harness.handlers.evaluate_tick(tick("0.09"))
    await harness.handlers.keep_position(POSITION)
    return harness


def exits(harness) -> list[TradeIntent]:
    return [i for i in harness.intents if i.reason.code == "STOP_LOSS"]


async def test_while_the_exchange_holds_the_stop_the_signal_asks_no_exit_above_its_limit() -> None:
    harness = await stopped_position()
    await harness.handlers.stop_event(stop_event("open"))
    await harness.handlers.evaluate_tick(tick("0.088", 60))  # through the stop, above the limit
    assert exits(harness) == []
    await harness.handlers.evaluate_tick(tick("0.0877", 120))  # gapped through its limit
    (exit_,) = exits(harness)
    assert exit_.side == "sell" and exit_.base_size == Decimal("0.11")


async def test_the_signal_takes_over_when_the_stop_is_not_live() -> None:
    harness = await stopped_position()  # asked, not confirmed: the signal acts
    await harness.handlers.evaluate_tick(tick("0.088", 60))
    assert len(exits(harness)) == 1
    harness = await stopped_position()
    await harness.handlers.stop_event(stop_event("open"))
    await harness.handlers.stop_event(stop_event("cancelled"))  # from outside: asked again ...
    await harness.handlers.evaluate_tick(tick("0.088", 60))  # ... but not live yet
    assert len(exits(harness)) == 1


async def test_a_restarted_signal_goes_on_from_the_stop_state_it_kept() -> None:
    """A stop cancelled from outside (its event handled), then a restart: the next stop is asked
    under the next attempt's id, not the id of the one that ended (already handled, so nothing
    would be placed and the position would wait for a stop forever)."""
    harness = await stopped_position()
    handlers = harness.handlers
    await handlers.stop_event(stop_event("open"))
    await handlers.stop_event(stop_event("cancelled"))
    assert handlers.stops_asked["b"] == "stop:b:b-mock-1:4:1"
    await handlers.stop_event(stop_event("open", "stop:b:b-mock-1:4:1"))
    restarted = SignalHandlers(
        bots=harness.bots, transact=handlers.transact,
        publish_evaluation=handlers.publish_evaluation, products=handlers.products,
    )  # fmt: skip
    await restarted.load_stops()
    assert restarted.stops_asked == {"b": "stop:b:b-mock-1:4:1"}
    assert restarted.stop_attempts == {"b": ("b-mock-1:4", 1)}
    assert restarted.stop_orders["b"] == replace(LIVE_STOP, intent_id="stop:b:b-mock-1:4:1")
    await restarted.evaluate_tick(tick("0.088", 1))  # the exchange's stop still stands in
    await restarted.keep_position(POSITION)
    assert restarted.stops_asked["b"] == "stop:b:b-mock-1:4:1" and exits(harness) == []
    await restarted.evaluate_tick(tick("0.09", 2))
    await restarted.stop_event(stop_event("cancelled", "stop:b:b-mock-1:4:1"))
    assert restarted.stops_asked["b"] == "stop:b:b-mock-1:4:2"  # the next attempt


async def test_a_readiness_judged_before_the_refusal_clears_nothing() -> None:
    harness = await stopped_position()
    handlers = harness.handlers
    await handlers.stop_refused(refused("stop:b:b-mock-1:4", "ORDER_IN_FLIGHT"))
    await handlers.stop_refused(refused("stop:b:b-mock-1:4:1", "ORDER_IN_FLIGHT"))
    await handlers.stop_again("b", NOW - timedelta(seconds=1))
    assert "b" not in handlers.stops_asked
    await handlers.stop_again("b", NOW)
    assert handlers.stops_asked["b"] == "stop:b:b-mock-1:4:2"


async def test_a_lock_step_replay_is_told_of_each_stop_asked_and_each_of_its_events_handled() -> (
    None
):
    harness = signal_harness()
    told: list[tuple[str, str]] = []
    harness.handlers.on_stop = lambda fact: told.append(
        (fact.intent_id, fact.status if isinstance(fact, OrderEvent) else "asked")
    )
    harness.handlers.products = {"ETH-BTC": PRODUCT}
    harness.bots.add("b", BOT)
    await harness.handlers.evaluate_tick(tick("0.09"))
    await harness.handlers.keep_position(POSITION)
    await harness.handlers.stop_event(stop_event("open"))
    await harness.handlers.stop_event(stop_event("cancelled"))  # asked again, then heard
    assert told == [
        ("stop:b:b-mock-1:4", "asked"),
        ("stop:b:b-mock-1:4", "open"),
        ("stop:b:b-mock-1:4:1", "asked"),
        ("stop:b:b-mock-1:4", "cancelled"),
    ]
    assert harness.handlers.stop_orders["b"].status == "asked"
