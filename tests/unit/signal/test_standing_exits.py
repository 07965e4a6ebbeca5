"""Protective exits and flatten are standing orders: asked again at every evaluation while the
trigger holds and the bot holds a position, backing off in event time (DESIGN.md promise 11)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.signal.standing import StandingExits
from shared.catalog import Bot
from shared.contracts import PositionUpdate, Reason, Ticker
from tests.support.signal_harness import signal_harness

T0 = datetime(2018, 1, 20, 12, 0, tzinfo=UTC)
STOP = Reason(code="STOP_LOSS", message="down")
BOT = Bot(product_id="ETH-BTC", quote_size=Decimal("0.01"), stop_loss_pct=Decimal(2))


def position(quantity: str = "2", sequence: int = 1, status: str = "open") -> PositionUpdate:
    held = status == "open"
    return PositionUpdate(
        message_id=f"p{sequence}", correlation_id="p", time=T0, bot_id="b", product_id="ETH-BTC",
        mode="mock", position_id="b-mock-1" if held else None, status=status,
        quantity=Decimal(quantity if held else "0"),
        average_entry_price=Decimal(100) if held else None,
        break_even_price=Decimal(100) if held else None,
        cost_basis=Decimal(100) * Decimal(quantity) if held else Decimal(0),
        realized_pnl=Decimal(0), fees_paid=Decimal(0), tranches=[], sequence=sequence,
    )  # fmt: skip


def tick(price: str, seconds: float) -> Ticker:
    return Ticker(product_id="ETH-BTC", price=Decimal(price), time=T0 + timedelta(seconds=seconds))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_held_trigger_is_asked_again_after_the_backoff_each_time_with_its_own_id() -> None:
    exits = StandingExits()
    asked = [exits.ask("b", position(), STOP, at(s)) for s in (0, 1, 5, 6, 15, 35, 75, 135, 195)]
    made = [a for a in asked if a is not None]
    # 0, then 5 s, 10 s, 20 s, 40 s, 60 s, 60 s apart: 1 s and 6 s are inside a back-off.
    assert [a is not None for a in asked] == [
        True,
        False,
        True,
        False,
        True,
        True,
        True,
        True,
        True,
    ]
    assert len(set(made)) == len(made)


def test_the_same_ticks_ask_the_same_ids_twice() -> None:
    def run() -> list[str | None]:
        exits = StandingExits()
        return [exits.ask("b", position(), STOP, at(s)) for s in (0, 5, 15, 35)]

    assert run() == run()


def test_a_new_state_of_the_position_asks_at_once() -> None:
    exits = StandingExits()
    assert exits.ask("b", position(sequence=1), STOP, at(0)) is not None
    assert exits.ask("b", position(sequence=2, quantity="1"), STOP, at(1)) is not None


def test_nothing_is_asked_when_flat_or_when_the_trigger_clears() -> None:
    exits = StandingExits()
    assert exits.ask("b", position(status="flat"), STOP, at(0)) is None
    assert exits.ask("b", position(), None, at(0)) is None
    assert exits.ask("b", position(), STOP, at(1)) is not None


def test_a_stop_loss_asked_once_is_asked_again_while_the_price_stays_below() -> None:
    # Issue 15, reproduced 1: four ticks below the stop made one intent.
    harness = signal_harness()
    harness.bots.add("b", BOT)

    async def run() -> None:
        await harness.handlers.keep_position(position())
        for seconds in (0, 10, 30, 60):
            await harness.handlers.evaluate_tick(tick("97", seconds))

    asyncio.run(run())
    assert [i.reason.code for i in harness.intents] == ["STOP_LOSS"] * 4
    assert all(i.base_size == Decimal(2) for i in harness.intents)
    assert len({i.intent_id for i in harness.intents}) == 4


def test_a_redelivered_tick_asks_nothing_new() -> None:
    harness = signal_harness()
    harness.bots.add("b", BOT)

    async def run() -> None:
        await harness.handlers.keep_position(position())
        await harness.handlers.evaluate_tick(tick("97", 0))
        harness.handlers.standing.forget("b")  # as after a restart
        await harness.handlers.evaluate_tick(tick("97", 0))

    asyncio.run(run())
    assert len(harness.intents) == 1


def test_a_flatten_exits_at_every_tick_until_the_position_is_flat() -> None:
    # Issue 15, reproduced 2: nothing acted on FLATTEN_REQUESTED.
    harness = signal_harness()
    harness.bots.add("b", Bot(product_id="ETH-BTC", quote_size=Decimal("0.01")))
    handlers = harness.handlers

    async def run() -> None:
        await handlers.keep_position(position())
        await handlers.flatten_requested("b", "operator: end of day", "evt-1")
        await handlers.evaluate_tick(tick("100", 0))
        await handlers.evaluate_tick(tick("100", 10))
        await handlers.keep_position(position(status="flat", sequence=2))
        await handlers.evaluate_tick(tick("100", 20))

    asyncio.run(run())
    assert [(i.reason.code, i.base_size) for i in harness.intents] == [
        ("FLATTEN", Decimal(2)),
        ("FLATTEN", Decimal(2)),
    ]
    assert handlers.flattening == {}


def test_a_resume_asks_a_backed_off_stop_at_the_next_evaluation() -> None:
    # Found by the outcome ring: attempts refused by a halt backed the stop off past the resume.
    harness = signal_harness()
    harness.bots.add("b", BOT)
    handlers = harness.handlers

    async def run() -> None:
        await handlers.keep_position(position())
        await handlers.evaluate_tick(tick("97", 0))
        await handlers.evaluate_tick(tick("97", 5))  # backed off: the next one is due at 15 s
        await handlers.resumed("b")
        await handlers.evaluate_tick(tick("97", 6))

    asyncio.run(run())
    assert [i.market_time for i in harness.intents] == [at(0), at(5), at(6)]


def test_a_resume_ends_a_flatten() -> None:
    harness = signal_harness()
    handlers = harness.handlers

    async def run() -> None:
        await handlers.flatten_requested("b", "operator", "evt-1")
        await handlers.resumed("b")
        handlers.flattening.clear()
        await handlers.load_flattens()  # nothing stored stands either

    asyncio.run(run())
    assert handlers.flattening == {}


def test_a_flatten_or_a_resume_is_acted_on_once_per_event() -> None:
    # A signed flatten delivered again after the bot bought again sold the new position.
    harness = signal_harness()
    harness.bots.add("b", Bot(product_id="ETH-BTC", quote_size=Decimal("0.01")))
    handlers = harness.handlers

    async def run() -> list[bool]:
        done = [await handlers.flatten_requested("b", "operator", "evt-1")]
        await handlers.keep_position(position(status="flat", sequence=2))  # the flatten ends
        await handlers.keep_position(position(sequence=3))  # the bot bought again
        done.append(await handlers.flatten_requested("b", "operator", "evt-1"))
        done.append(await handlers.resumed("b", "evt-2"))
        done.append(await handlers.resumed("b", "evt-2"))
        return done

    assert asyncio.run(run()) == [True, False, True, False]
    assert handlers.flattening == {}


def test_a_flatten_stands_across_a_restart_of_the_handlers() -> None:
    harness = signal_harness()
    handlers = harness.handlers

    async def run() -> dict[str, str]:
        await handlers.flatten_requested("b", "operator", "evt-1")
        handlers.flattening.clear()
        await handlers.load_flattens()
        return dict(handlers.flattening)

    assert asyncio.run(run()) == {"b": "operator"}


def test_temperature_bands_are_set_per_bot() -> None:
    # Issue 15, reproduced 7: the bands were module constants.
    harness = signal_harness()
    eager = Bot(product_id="ETH-BTC", quote_size=Decimal("0.01"), frozen_below=Decimal(10),
                cool_below=Decimal(20), warm_below=Decimal(30))  # fmt: skip
    running = harness.bots.add("b", eager)

    async def run() -> None:
        await harness.handlers.evaluate_tick(tick("100", 0))
        await harness.handlers.confirm("b", running, "buy", Decimal(35), at(1), "s1", "test",
                                       None, skip_confirmation=True)  # fmt: skip

    asyncio.run(run())
    assert harness.evaluations[-1].band == "hot"
    assert [(i.action, i.band, i.quote_size) for i in harness.intents] == [
        ("entry", "hot", Decimal("0.01"))
    ]


def test_temperature_bands_must_rise() -> None:
    import pytest

    with pytest.raises(ValueError, match="temperature bands"):
        Bot(product_id="ETH-BTC", quote_size=Decimal("0.01"), cool_below=Decimal(20))


def test_a_flatten_is_asked_at_once_at_the_newest_price() -> None:
    harness = signal_harness()
    harness.bots.add("b", Bot(product_id="ETH-BTC", quote_size=Decimal("0.01")))

    async def run() -> None:
        await harness.handlers.evaluate_tick(tick("100", 0))
        await harness.handlers.keep_position(position())
        await harness.handlers.flatten_requested("b", "operator", "evt-1")

    asyncio.run(run())
    assert [(i.reason.code, i.market_time) for i in harness.intents] == [("FLATTEN", T0)]


def test_a_sell_right_after_a_fill_waits_for_the_newer_position() -> None:
    # Issue 15, reproduced 3: a sell sent at once after a fill was NOTHING_TO_SELL.
    harness = signal_harness()
    running = harness.bots.add("b", Bot(product_id="ETH-BTC", quote_size=Decimal("0.01")))
    handlers = harness.handlers

    async def run() -> None:
        await handlers.evaluate_tick(tick("100", 0))

        async def ledger_books_the_fill() -> None:
            await asyncio.sleep(0.1)
            await handlers.keep_position(position())

        booked = asyncio.create_task(ledger_books_the_fill())
        await handlers.confirm("b", running, "sell", Decimal(80), at(1), "s1", "test", None,
                               skip_confirmation=True, position_wait_s=2)  # fmt: skip
        await booked

    asyncio.run(run())
    assert [(i.action, i.base_size) for i in harness.intents] == [("exit", Decimal(2))]


def test_a_sell_with_nothing_held_answers_after_the_bounded_wait() -> None:
    harness = signal_harness()
    running = harness.bots.add("b", Bot(product_id="ETH-BTC", quote_size=Decimal("0.01")))

    async def run() -> None:
        await harness.handlers.evaluate_tick(tick("100", 0))
        await harness.handlers.confirm(
            "b", running, "sell", Decimal(80), at(1), "s1", "test", None,
            skip_confirmation=True, position_wait_s=0.1,
        )  # fmt: skip

    asyncio.run(run())
    assert harness.intents == []


def test_a_resume_of_the_whole_system_asks_every_backed_off_stop_at_the_next_evaluation() -> None:
    harness = signal_harness()
    harness.bots.add("b", BOT)
    handlers = harness.handlers

    async def run() -> None:
        await handlers.keep_position(position())
        await handlers.evaluate_tick(tick("97", 0))
        await handlers.evaluate_tick(tick("97", 5))  # backed off: the next one is due at 15 s
        handlers.standing.forget_all()  # what signal does on a system-wide RESUME event
        await handlers.evaluate_tick(tick("97", 6))

    asyncio.run(run())
    assert [i.market_time for i in harness.intents] == [at(0), at(5), at(6)]
