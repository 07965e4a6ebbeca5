"""Readiness is ``decide`` on probes: the same reasons as a real intent, with cooldown ends."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.safety.readiness import BotClock, ReadinessPublisher, assess
from services.safety.rules import Counters, Limits, decide
from shared.contracts import BotReadiness
from tests.unit.safety.builders import HOLDING, LIMITS, T0, make_intent, state_for

PRICE = Decimal("0.09")


def codes(blocks) -> list[str]:
    return [block.code for block in blocks]


def test_a_calm_flat_bot_can_enter_and_has_nothing_to_exit():
    ready = assess("bot-1", "ETH-BTC", state_for("entry"), LIMITS, T0, PRICE)
    assert ready.can_enter and ready.entry_blocks == []
    assert not ready.can_exit and codes(ready.exit_blocks) == ["NOTHING_TO_SELL"]
    assert ready.tranches == 0 and ready.max_tranches == 3
    assert ready.entry_cooldown_until is None and ready.exit_cooldown_until is None


def test_an_entry_cooldown_names_its_end_in_event_time():
    entered = T0 - timedelta(minutes=2)
    state = state_for("add", last_entry_at=entered)
    ready = assess("bot-1", "ETH-BTC", state, LIMITS, T0, PRICE)
    assert not ready.can_enter
    [block] = ready.entry_blocks
    assert block.code == "ENTRY_COOLDOWN" and "3m00s to go" in block.message
    assert block.until == entered + timedelta(minutes=5) == ready.entry_cooldown_until
    assert ready.can_exit, "an entry cooldown never stops an exit"


def test_a_cooldown_that_has_passed_is_no_block():
    state = state_for("add", last_entry_at=T0 - timedelta(minutes=5))
    ready = assess("bot-1", "ETH-BTC", state, LIMITS, T0, PRICE)
    assert ready.can_enter and ready.entry_cooldown_until is None


def test_every_reason_is_named_at_once_halted_in_flight_and_capped():
    held = replace(HOLDING, tranches=3)
    state = state_for(
        "add",
        position=held,
        trading_state="halted",
        trading_reason="operator halt (alice)",
        orders_in_flight=1,
    )
    ready = assess("bot-1", "ETH-BTC", state, LIMITS, T0, PRICE)
    assert set(codes(ready.entry_blocks)) == {"HALTED", "ORDER_IN_FLIGHT", "TRANCHE_CAP"}
    assert set(codes(ready.exit_blocks)) == {"HALTED", "ORDER_IN_FLIGHT"}
    assert ready.trading_state == "halted" and ready.orders_in_flight == 1


def test_an_unknown_position_fails_closed_both_ways():
    ready = assess("bot-1", "ETH-BTC", state_for("entry", position=None), LIMITS, T0, PRICE)
    assert "POSITION_UNKNOWN" in codes(ready.entry_blocks)
    assert "POSITION_UNKNOWN" in codes(ready.exit_blocks)
    assert ready.tranches is None


def test_size_rules_are_left_to_the_real_order():
    limits = replace(LIMITS, min_order_notional=Decimal(10))
    ready = assess("bot-1", "ETH-BTC", state_for("entry"), limits, T0, PRICE)
    assert ready.can_enter, "the probe's tiny size must not read as ORDER_TOO_SMALL"


def test_without_a_price_the_bot_rules_still_answer():
    state = state_for("entry", counters=Counters(bot_entries_hour=6))
    ready = assess("bot-1", None, state, LIMITS, T0, None)
    assert codes(ready.entry_blocks) == ["BOT_ENTRIES_PER_HOUR"]
    assert ready.product_id is None


@given(
    entered_min=st.integers(min_value=0, max_value=30),
    exited_min=st.integers(min_value=0, max_value=30),
    hour=st.integers(min_value=0, max_value=8),
    tranches=st.integers(min_value=0, max_value=4),
    in_flight=st.integers(min_value=0, max_value=1),
    state_name=st.sampled_from(["active", "reducing", "halted"]),
)
def test_readiness_agrees_with_decide_on_a_real_intent(
    entered_min, exited_min, hour, tranches, in_flight, state_name
):
    """Whatever the state, a real entry of an unlimited size is approved exactly when readiness
    says the bot can enter, and a real exit of the position exactly when it can exit."""
    position = replace(HOLDING, tranches=tranches) if tranches else state_for("entry").position
    state = state_for(
        "entry",
        position=position,
        last_entry_at=T0 - timedelta(minutes=entered_min),
        last_exit_at=T0 - timedelta(minutes=exited_min),
        counters=Counters(bot_entries_hour=hour, bot_entries_day=hour),
        orders_in_flight=in_flight,
        trading_state=state_name,
        trading_reason="test",
    )
    ready = assess("bot-1", "ETH-BTC", state, LIMITS, T0, PRICE)
    action = "add" if position.is_open else "entry"
    entry = decide(make_intent(action, at=T0), state, LIMITS, T0)
    assert entry.approved == ready.can_enter
    assert set(codes(ready.entry_blocks)) == {r.code for r in entry.reasons}
    if position.is_open:
        exit_ = decide(make_intent("exit", size=str(position.quantity)), state, LIMITS, T0)
        assert exit_.approved == ready.can_exit


def test_a_bots_clock_is_the_newer_of_its_news_and_its_price():
    clock = BotClock()
    assert clock.now(None) is None
    clock.saw("ETH-BTC", T0)
    clock.saw(None, T0 - timedelta(minutes=1))
    assert clock.product_id == "ETH-BTC" and clock.time == T0
    assert clock.now(T0 + timedelta(seconds=5)) == T0 + timedelta(seconds=5)
    assert clock.now(T0 - timedelta(hours=1)) == T0


def _ready(bot_id: str) -> BotReadiness:
    return assess(bot_id, "ETH-BTC", state_for("entry"), Limits(), T0, PRICE)


async def test_the_publisher_coalesces_a_burst_into_one_message_per_bot():
    asked: list[set[str]] = []
    sent: list[str] = []

    async def assess_bots(bots: set[str]) -> list[BotReadiness]:
        asked.append(set(bots))
        return [_ready(bot) for bot in sorted(bots)]

    async def publish(readiness: BotReadiness) -> None:
        sent.append(readiness.bot_id)

    publisher = ReadinessPublisher(assess_bots, publish, delay_s=0.05)
    runner = asyncio.create_task(publisher.run(lambda error: None))
    try:
        for _ in range(20):
            publisher.mark("bot-1", "bot-2")
        async with asyncio.timeout(5):
            while len(sent) < 2:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert asked == [{"bot-1", "bot-2"}] and sorted(sent) == ["bot-1", "bot-2"]
        publisher.mark_all()
        async with asyncio.timeout(5):
            while len(sent) < 4:
                await asyncio.sleep(0.01)
        assert set(publisher.latest) == {"bot-1", "bot-2"}
    finally:
        runner.cancel()


async def test_a_failed_pass_keeps_its_bots_for_the_next():
    calls = 0

    async def assess_bots(bots: set[str]) -> list[BotReadiness]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("store away")
        return [_ready(bot) for bot in sorted(bots)]

    async def publish(readiness: BotReadiness) -> None:
        pass

    publisher = ReadinessPublisher(assess_bots, publish, delay_s=0)
    publisher.mark("bot-1")
    with pytest.raises(ConnectionError):
        await publisher.publish_marked()
    assert await publisher.publish_marked() == 1
    assert publisher.latest["bot-1"].can_enter


def test_an_order_the_exchange_lost_is_the_block_readiness_shows():
    state = state_for("entry", orders_in_flight=1, entries_in_flight=1,
                      unknown_at_exchange=("tranche-lost-1",))  # fmt: skip
    ready = assess("bot-1", "ETH-BTC", state, LIMITS, T0, PRICE)
    assert codes(ready.entry_blocks) == ["ORDER_UNKNOWN_AT_EXCHANGE"]
    assert codes(ready.exit_blocks) == ["ORDER_UNKNOWN_AT_EXCHANGE", "NOTHING_TO_SELL"]  # flat
    assert not ready.can_enter and ready.orders_in_flight == 1
    assert "tranche orders resolve tranche-lost-1" in ready.entry_blocks[0].message
