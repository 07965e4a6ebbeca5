"""The lock-step barrier on a real NATS server: it follows decisions and order events from the
stream, the signal's position view, and safety's durable consumer, and lets the next tick go
only when every intent has settled; an intent that does not settle fails the replay by id."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal

import nats
import pytest

from services.signal.lockstep import Lockstep, SettleTimeout
from shared.contracts import (
    Fill,
    OrderApproved,
    OrderEvent,
    OrderRejected,
    PositionUpdate,
    Reason,
    Ticker,
    TradeIntent,
)
from shared.streams import ORDERS, SAFETY_ORDER_EVENTS, ensure_streams
from tests.support.waiting import eventually as until

BOT = "eth-btc-momentum"
AT = datetime(2018, 1, 20, 12, tzinfo=UTC)
TICK = Ticker(product_id="ETH-BTC", price=Decimal("0.09"), time=AT)


def intent(n: int) -> TradeIntent:
    return TradeIntent(
        message_id=f"i-{n}", correlation_id=f"i-{n}", time=AT, intent_id=f"i-{n}",
        signal_id=f"s-{n}", bot_id=BOT, product_id="ETH-BTC", action="entry", side="buy",
        quote_size=Decimal("0.01"), temperature=Decimal(80), band="hot",
        reason=Reason(code="SIGNAL", message="test"), reference_price=Decimal("0.09"),
        market_time=AT,
    )  # fmt: skip


def order_event(n: int, status: str, fills: list[Fill]) -> OrderEvent:
    return OrderEvent(
        message_id=f"order-c-{n}-{status}", correlation_id=f"i-{n}", time=AT, bot_id=BOT,
        product_id="ETH-BTC", mode="mock", intent_id=f"i-{n}", client_order_id=f"c-{n}",
        action="entry", side="buy", status=status, fills=fills,
        filled_size=sum((f.size for f in fills), Decimal(0)),
    )  # fmt: skip


def position(sequence: int) -> PositionUpdate:
    return PositionUpdate(
        message_id=f"position-{sequence}", correlation_id="i-1", time=AT, bot_id=BOT,
        product_id="ETH-BTC", mode="mock", position_id=f"{BOT}-mock-1", status="open",
        quantity=Decimal("0.1"), average_entry_price=Decimal("0.09"),
        break_even_price=Decimal("0.09"), cost_basis=Decimal("0.009"), realized_pnl=Decimal(0),
        fees_paid=Decimal(0), tranches=[], sequence=sequence,
    )  # fmt: skip


class Pipeline:
    """Stands in for safety, the executor and the ledger: publishes what they would."""

    def __init__(self, nc) -> None:
        self.js = nc.jetstream()

    async def publish(self, subject: str, message) -> None:
        await self.js.publish(
            subject, message.model_dump_json().encode(), stream=ORDERS.name,
            headers={"Nats-Msg-Id": message.message_id},
        )  # fmt: skip


@pytest.fixture
async def connected(nats_url: str) -> AsyncIterator:
    nc = await nats.connect(nats_url)
    await ensure_streams(nc.jetstream())
    try:
        yield nc
    finally:
        await nc.close()


async def test_the_next_tick_waits_until_the_fill_is_booked_and_safety_has_consumed_it(
    connected,
) -> None:
    js = connected.jetstream()
    safety = await js.pull_subscribe(
        SAFETY_ORDER_EVENTS.filter_subject, durable=SAFETY_ORDER_EVENTS.durable,
        stream=ORDERS.name, config=SAFETY_ORDER_EVENTS.config(),
    )  # fmt: skip
    lockstep = Lockstep(lambda: connected, timeout_s=20)
    await lockstep.start()
    pipeline = Pipeline(connected)
    lockstep.created("i-1", BOT)
    lockstep.ticked(TICK)
    barrier = asyncio.create_task(lockstep.after_tick(TICK))

    def waits_for(stage: str) -> Callable[[], bool]:
        return lambda: lockstep.tracker.waiting_for("i-1") == stage

    approval = OrderApproved(
        message_id="decision-i-1", correlation_id="i-1", time=AT, intent=intent(1),
        client_order_id="c-1", mode="mock", decided_at=AT,
    )  # fmt: skip
    await pipeline.publish(f"tranche.orders.approved.{BOT}", approval)
    await until(waits_for("order"), "the approval to be seen")
    fill = Fill(trade_id="t-1", price=Decimal("0.09"), size=Decimal("0.1"), fee=Decimal(0), time=AT)
    await pipeline.publish(f"tranche.orders.events.{BOT}", order_event(1, "submitted", []))
    await pipeline.publish(f"tranche.orders.events.{BOT}", order_event(1, "filled", [fill]))
    await until(waits_for("position"), "the fill to be seen")
    lockstep.position(position(1))
    await until(waits_for("safety"), "the position to be seen")
    await lockstep._ask_safety()  # delivered to nobody yet, acknowledged by nobody
    assert waits_for("safety")() and not barrier.done()
    (first,) = await safety.fetch(1, timeout=5)
    await first.ack_sync()
    await lockstep._ask_safety()  # the submitted event is acknowledged, the filled one not
    assert waits_for("safety")() and not barrier.done()
    (second,) = await safety.fetch(1, timeout=5)
    await second.ack_sync()
    await asyncio.wait_for(barrier, 10)
    assert lockstep.tracker.unsettled() == []


async def test_a_rejection_settles_the_intent(connected) -> None:
    lockstep = Lockstep(lambda: connected, timeout_s=20)
    await lockstep.start()
    lockstep.created("i-2", BOT)
    lockstep.ticked(TICK)
    barrier = asyncio.create_task(lockstep.after_tick(TICK))
    rejection = OrderRejected(
        message_id="decision-i-2", correlation_id="i-2", time=AT, intent=intent(2), mode="mock",
        reasons=[Reason(code="ENTRY_COOLDOWN", message="too soon")], decided_at=AT,
    )  # fmt: skip
    await Pipeline(connected).publish(f"tranche.orders.rejected.{BOT}", rejection)
    await asyncio.wait_for(barrier, 10)


async def test_an_intent_that_never_settles_stops_the_replay_naming_it(connected) -> None:
    lockstep = Lockstep(lambda: connected, timeout_s=0.3)
    await lockstep.start()
    lockstep.created("i-3", BOT)
    lockstep.ticked(TICK)
    with pytest.raises(SettleTimeout, match="intent i-3 of bot eth-btc-momentum waits for safety"):
        await asyncio.wait_for(lockstep.after_tick(TICK), 10)


async def test_a_tick_the_signal_never_evaluated_stops_the_replay(connected) -> None:
    lockstep = Lockstep(lambda: connected, timeout_s=0.2)
    await lockstep.start()
    with pytest.raises(SettleTimeout, match="did not evaluate the ETH-BTC tick"):
        await asyncio.wait_for(lockstep.after_tick(TICK), 10)
