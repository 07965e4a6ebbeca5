"""Protective stop-limit orders on Coinbase, through the real SDK against the HTTPS stand-in:
the request's shape (``stop_limit_stop_limit_gtc``, a sell stop ``STOP_DIRECTION_STOP_DOWN``),
resting, listing, triggering, partial fills, cancelling, refusal; and a stop that fills while the
executor is stopped is reported filled when it starts again, placed once."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
from sqlmodel import Session

from services.executor.exchanges.base import OrderRefused, OrderRequest
from services.executor.orders import convert_fill
from services.executor.protective import held_stops
from shared.contracts import Reason
from shared.money import utc_now
from tests.support.coinbase_standin import PREFIX, STOP_LIMIT, ApiKey, CoinbaseStandIn
from tests.support.live_executor import Live, start_live, stop_live
from tests.support.live_executor import coinbase_adapter as adapter
from tests.support.waiting import eventually


def stop_sell(cid: str, size: str = "0.01", stop: str = "48000", limit: str = "47800"):
    return OrderRequest(
        cid, "BTC-USD", "sell", "stop_limit", None, Decimal(size), Decimal(limit),
        stop_price=Decimal(stop),
    )  # fmt: skip


def test_a_stop_goes_out_in_coinbase_s_shape_rests_triggers_and_fills(
    standin: CoinbaseStandIn, key: ApiKey
) -> None:
    coinbase = adapter(standin, key)
    placed = coinbase.place(stop_sell("tranche-s1"))
    (order,) = standin.orders.values()
    assert order.configuration == {
        STOP_LIMIT: {
            "base_size": "0.01", "limit_price": "47800", "stop_price": "48000",
            "stop_direction": "STOP_DIRECTION_STOP_DOWN",
        }
    }  # fmt: skip
    assert order.side == "SELL" and coinbase.get(placed.exchange_order_id).status == "OPEN"
    assert [o.client_order_id for o in coinbase.open_orders()] == ["tranche-s1"]
    assert standin.move("48100") == []  # above the stop: nothing
    assert standin.move("47900", fill_size="0.004") == [placed.exchange_order_id]
    part = coinbase.get(placed.exchange_order_id)
    assert part.status == "OPEN" and part.filled_size == Decimal("0.004")
    assert order.as_json()["trigger_status"] == "STOP_TRIGGERED"
    standin.move("47850")
    done = coinbase.get(placed.exchange_order_id)
    assert done.status == "FILLED" and done.filled_size == Decimal("0.01")
    fills = [convert_fill(f) for f in coinbase.fills(placed.exchange_order_id)]
    assert [f.price for f in fills] == [Decimal("47900"), Decimal("47850")]


def test_a_gap_through_the_limit_leaves_the_stop_resting_and_a_cancel_ends_it(
    standin: CoinbaseStandIn, key: ApiKey
) -> None:
    coinbase = adapter(standin, key)
    placed = coinbase.place(stop_sell("tranche-s2"))
    assert standin.move("47000") == []  # triggered, but below its limit
    assert coinbase.get(placed.exchange_order_id).status == "OPEN"
    coinbase.cancel(placed.exchange_order_id)
    assert coinbase.get(placed.exchange_order_id).status == "CANCELLED"
    assert standin.move("47900") == []  # a cancelled stop never fills


def test_a_stop_the_market_is_already_through_is_refused(
    standin: CoinbaseStandIn, key: ApiKey
) -> None:
    standin.price = Decimal("47950")
    with pytest.raises(OrderRefused) as refused:
        adapter(standin, key).place(stop_sell("tranche-s3"))
    assert refused.value.code == "PREVIEW_STOP_PRICE_ABOVE_LAST_TRADE_PRICE"


async def test_a_stop_that_fills_while_the_executor_is_down_is_booked_on_restart_placed_once(
    standin: CoinbaseStandIn, key: ApiKey, nats_url: str, tmp_path: Path
) -> None:
    live = await start_live(standin, key, nats_url, tmp_path)
    stop = {
        "action": "exit", "side": "sell", "base_size": Decimal("0.01"),
        "order_type": "stop_limit", "limit_price": Decimal("47800"),
        "stop_price": Decimal("48000"),
        "reason": Reason(code="STOP_ON_EXCHANGE", message="protective stop"),
    }  # fmt: skip
    try:
        cid = await live.approve(1, **stop)
        resting = await live.resting(cid)
        assert resting.order_type == "stop"
    finally:
        await stop_live(live)
    standin.move("47900")  # the market falls through the stop while the executor is down
    live = await start_live(standin, key, nats_url, tmp_path)
    try:

        async def filled():
            row = live.order(cid)
            return row if row is not None and row.status == "filled" else None

        row = await eventually(filled, timeout=15, what="the stop reported filled")
        assert row.filled_size == Decimal("0.01")

        async def published() -> list[tuple[str, str | None]] | None:
            # The outbox relay publishes the event after the row's commit: wait for the stream.
            found = await live.statuses(cid)
            return found if found and found[-1][0] == "filled" else None

        statuses = await eventually(published, timeout=15, what="the filled event published")
        assert statuses[-1] == ("filled", None) and ("open", None) in statuses
        assert live.requests("POST", f"{PREFIX}/orders") == 1  # placed once, across the restart
        assert len([o for o in standin.orders.values() if o.client_order_id.endswith(cid)]) == 1
    finally:
        await stop_live(live)


async def test_a_sell_decided_before_the_stop_filled_is_refused_never_a_second_sale(
    live: Live,
) -> None:
    """The signal decides to sell the holding while its stop rests; the market falls through
    the stop before the sell reaches the executor: the exchange sold the holding, and the sell,
    sized from a holding no longer there, is refused (STOP_FILLED_FIRST), not placed. Coinbase's
    fills carry an entry id and are kept in their own table, which the check did not read: the
    exchange sold 0.02 of a 0.01 holding."""
    stop = await live.approve(
        1, action="exit", side="sell", base_size=Decimal("0.01"), order_type="stop_limit",
        limit_price=Decimal("47800"), stop_price=Decimal("48000"),
        reason=Reason(code="STOP_ON_EXCHANGE", message="protective stop"),
    )  # fmt: skip
    await live.resting(stop)
    decided = utc_now()  # the signal decides to sell the whole holding while the stop rests
    assert live.standin.move("47900")  # then the exchange sells it through the stop

    async def stop_filled():
        row = live.order(stop)
        return row if row is not None and row.status == "filled" else None

    await eventually(stop_filled, timeout=15, what="the stop booked filled")
    sell = await live.approve(
        2, decided_at=decided, action="exit", side="sell", base_size=Decimal("0.01"),
        order_type="market", limit_price=None,
        reason=Reason(code="SIGNAL", message="signal exit"),
    )  # fmt: skip
    settled = await live.settled(sell)
    assert settled.status == "failed"
    assert (live.reason(sell) or {}).get("code") == "STOP_FILLED_FIRST"
    sold = sum(
        (o.filled_size for o in live.standin.orders.values() if o.side == "SELL"), Decimal(0)
    )
    assert sold == Decimal("0.01")
    assert live.requests("POST", f"{PREFIX}/orders") == 1  # the stop only


async def test_an_adopted_stop_is_kept_as_a_stop_not_cancelled_as_a_stale_limit(
    standin: CoinbaseStandIn, key: ApiKey, nats_url: str, tmp_path: Path
) -> None:
    """A stop of ours resting on Coinbase that the store does not know (a store restored from a
    backup) is adopted as what it is: a stop with its stop price, resting for good. It was
    adopted as a limit order and cancelled past the limit time-to-live (LIMIT_TTL), leaving the
    position without its protective stop."""
    placed = adapter(standin, key).place(stop_sell("tranche-stop-1"))
    live = await start_live(standin, key, nats_url, tmp_path, limit_order_ttl_s=1)
    try:
        row = await eventually(lambda: live.order("stop-1"), timeout=10, what="the stop adopted")
        assert row.adopted and row.order_type == "stop" and row.ttl_s is None
        assert (row.base_size, row.limit_price) == (Decimal("0.01"), Decimal("47800"))
        with Session(live.service.engine) as session:
            (held,) = held_stops(session)
        assert (held.client_order_id, held.stop_price) == ("stop-1", Decimal("48000"))
        await asyncio.sleep(2.5)  # past the limit time-to-live, several polls
        assert standin.orders[placed.exchange_order_id].status == "OPEN"
        assert live.requests("POST", f"{PREFIX}/orders/batch_cancel") == 0
    finally:
        await stop_live(live)
