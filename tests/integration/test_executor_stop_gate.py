"""The executor's last check before a sell reaches the exchange, on SQLite and PostgreSQL: never
two live stops for a bot, never a stop beside another sell, every live stop cancelled before any
other sell, and a sell that a stop's fill overtook refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlmodel import Session

from services.executor.protective import (
    GO,
    STOP,
    OrderStopRow,
    halt_cancels,
    held_stops,
    sell_gate,
)
from services.executor.store import TABLES, FillEntryRow, FillRow, OrderRow
from services.executor.tables import SERVICE_TABLES
from shared.db import create_tables

AT = datetime(2026, 1, 5, tzinfo=UTC)


def order(cid: str, side: str = "sell", order_type: str = STOP, status: str = "open", **more):
    return OrderRow(
        client_order_id=cid, exchange_client_order_id=f"t-{cid}", intent_id=cid, bot_id="b",
        product_id="ETH-BTC", mode="mock", action="exit" if side == "sell" else "entry",
        side=side, order_type=order_type, base_size=Decimal("0.1"), decided_at=AT,
        status=status, **more,
    )  # fmt: skip


def gate(
    engine, rows: list[OrderRow], subject: OrderRow, fills: tuple[FillRow | FillEntryRow, ...] = ()
):
    create_tables(engine, TABLES)
    with Session(engine) as session:
        session.add_all([*rows, subject, *fills])
        session.commit()
        return sell_gate(session, session.get(OrderRow, subject.client_order_id))


def test_a_buy_or_a_lone_sell_goes(engine) -> None:
    assert gate(engine, [], order("buy", "buy", "market", "new")) == GO
    assert gate(engine, [order("old", status="cancelled")], order("s", status="new")) == GO


def test_a_new_stop_replaces_the_live_one_once_its_cancel_is_confirmed(engine) -> None:
    decided = gate(engine, [order("old")], order("new", status="new"))
    assert decided.cancel_first == ("old",) and decided.wait and decided.refusal is None


def test_a_stop_being_cancelled_is_waited_for_not_cancelled_again(engine) -> None:
    cancelling = order("old", status="pending_cancel", cancel_code="STOP_BEFORE_SELL")
    decided = gate(engine, [cancelling], order("new", status="new"))
    assert decided.cancel_first == () and decided.wait


def test_every_other_sell_cancels_the_live_stop_first(engine) -> None:
    decided = gate(engine, [order("stop")], order("exit", order_type="market", status="new"))
    assert decided.cancel_first == ("stop",) and decided.wait


def test_no_stop_beside_another_sell(engine) -> None:
    selling = order("exit", order_type="market", status="submitted")
    decided = gate(engine, [selling], order("stop", status="new"))
    assert decided.refusal is not None and decided.refusal.code == "SELL_ALREADY_LIVE"


def stop_fill(size: str, at: datetime, entry_id: str | None) -> FillRow | FillEntryRow:
    """A fill of the order "stop" as the executor stores it: Coinbase's and the mock's carry an
    entry id (``executor_fill_entries_v1``), older ones only a trade id (``executor_fills_v1``)."""
    values = {
        "trade_id": "t1", "client_order_id": "stop", "price": Decimal("0.08"),
        "size": Decimal(size), "fee": Decimal(0), "liquidity": "taker", "time": at,
    }  # fmt: skip
    if entry_id is None:
        return FillRow(**values)
    return FillEntryRow(entry_id=entry_id, trade_type="FILL", **values)


@pytest.mark.parametrize("entry_id", ["e-1", None])
def test_a_sell_a_stop_fill_overtook_is_refused(engine, entry_id: str | None) -> None:
    filled = order("stop", status="filled", filled_size=Decimal("0.1"))
    fill = stop_fill("0.1", AT + timedelta(seconds=1), entry_id)
    decided = gate(engine, [filled], order("exit", order_type="market", status="new"), (fill,))
    assert decided.refusal is not None and decided.refusal.code == "STOP_FILLED_FIRST"


@pytest.mark.parametrize("entry_id", ["e-1", None])
def test_an_earlier_partial_fill_of_a_stop_refuses_nothing(engine, entry_id: str | None) -> None:
    partly = order("stop", status="open", filled_size=Decimal("0.05"))
    fill = stop_fill("0.05", AT - timedelta(minutes=1), entry_id)
    decided = gate(engine, [partly], order("new", status="new"), (fill,))
    assert decided.refusal is None and decided.cancel_first == ("stop",)


def test_a_halt_keeps_stops_unless_asked_to_cancel_them() -> None:
    assert not halt_cancels("HALT", STOP)
    assert halt_cancels("HALT_CANCEL_STOPS", STOP)
    assert halt_cancels("HALT", "market") and halt_cancels("HALT", "limit")


def test_the_stops_not_yet_final_are_listed_with_what_remains_and_how_live(engine) -> None:
    """``GET /stops`` of the executor: resting, asked and being cancelled; never a final one."""
    create_tables(engine, SERVICE_TABLES)
    rows = [
        order("resting", status="partially_filled", filled_size=Decimal("0.04"),
              limit_price=Decimal("0.0870")),
        order("asked", status="new", limit_price=Decimal("0.0870")),
        order("going", status="open", cancel_code="STOP_BEFORE_SELL", limit_price=Decimal("0.087")),
        order("done", status="cancelled", limit_price=Decimal("0.0870")),
        order("exit", order_type="market", status="open"),
    ]  # fmt: skip
    with Session(engine) as session:
        for i, row in enumerate(rows):
            row.created_at = AT + timedelta(seconds=i)
            session.add(row)
            if row.order_type == STOP:
                session.add(OrderStopRow(client_order_id=row.client_order_id,
                                         stop_price=Decimal("0.08800001")))  # fmt: skip
        session.commit()
        held = held_stops(session)
    assert [(h.client_order_id, h.status, h.size) for h in held] == [
        ("resting", "resting", Decimal("0.06")),
        ("asked", "pending", Decimal("0.1")),
        ("going", "cancelling", Decimal("0.1")),
    ]
    assert {(h.stop_price, h.limit_price) for h in held} == {
        (Decimal("0.08800001"), Decimal("0.0870"))
    }
