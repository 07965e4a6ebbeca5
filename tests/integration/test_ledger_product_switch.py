"""A bot whose product changed while flat (docs/bots.md allows it), on SQLite and PostgreSQL:
every fill is booked with its own product's minimum size and increment. The whole history was
re-booked with the new product's: an old position closed with dust came back to life and took
the new product's first fill (one position mixing ETH and BTC), or an old position was closed
early as dust and a realized loss invented on a buy, which tripped safety's LOSING_STREAK."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine
from sqlmodel import Session

from services.ledger.store import position_of
from shared.catalog import load_catalog
from shared.contracts import Fill, OrderEvent
from tests.integration import test_ledger_handling
from tests.integration.test_ledger_handling import book

ledger_db = test_ledger_handling.engine
"""An empty ledger database (the fixture of test_ledger_handling, SQLite and PostgreSQL)."""
T0 = datetime(2018, 1, 20, 12, 0, tzinfo=UTC)
PRODUCTS = load_catalog(None).products
D = Decimal


def event(seq: int, order: str, product: str, side: str, size: str, price: str) -> OrderEvent:
    return OrderEvent(
        message_id=f"{order}-filled-{seq}", correlation_id=f"intent-{order}", time=T0,
        bot_id="switcher", product_id=product, mode="mock", intent_id=f"intent-{order}",
        client_order_id=order, action="exit" if side == "sell" else "entry", side=side,
        status="filled", sequence=seq,
        fills=[Fill(trade_id=f"t-{order}", price=D(price), size=D(size), fee=D(0),
                    time=T0 + timedelta(minutes=seq))],
    )  # fmt: skip


def test_first_fill_after_a_product_switch_opens_a_clean_position(ledger_db: Engine) -> None:
    # ETH-BTC (min size 0.001): buy 1 ETH, sell 0.9995; the exit is final and 0.0005 ETH of
    # dust is written off: the bot is flat.
    book(ledger_db, event(1, "o-1", "ETH-BTC", "buy", "1", "0.05"))
    book(ledger_db, event(2, "o-2", "ETH-BTC", "sell", "0.9995", "0.06"))
    with Session(ledger_db) as session:
        flat = position_of(session, "switcher", "mock")
    assert flat is not None and flat.status == "flat"
    # Flat, so the operator may move the bot to BTC-USD (docs/bots.md). It buys 0.01 BTC.
    position, _, _ = book(ledger_db, event(3, "o-3", "BTC-USD", "buy", "0.01", "40000"))
    # A trader expects a new position of 0.01 BTC at 40000, one tranche.
    assert (position.status, position.product_id) == ("open", "BTC-USD")
    assert [t.client_order_id for t in position.tranches] == ["o-3"], position.tranches
    assert position.quantity == D("0.01"), position.quantity
    assert position.average_entry_price == D("40000"), position.average_entry_price
    # ...and the realized P&L booked on ETH-BTC unchanged (the dust's write-off stays).
    assert position.realized_pnl_total == flat.realized_pnl_total


def test_a_switch_to_a_product_with_a_larger_minimum_invents_a_realized_loss(
    ledger_db: Engine,
) -> None:
    # BTC-USD (min size 1E-8): buy 0.0015 BTC at 40000, sell 0.0007 at 41000 (that order is
    # final: 0.0008 stays, far above BTC-USD's minimum), then sell the 0.0008 at 41000: closed,
    # realized 0.0015 x 1000 = 1.5 USD.
    book(ledger_db, event(1, "o-1", "BTC-USD", "buy", "0.0015", "40000"))
    book(ledger_db, event(2, "o-2", "BTC-USD", "sell", "0.0007", "41000"))
    closed, _, _ = book(ledger_db, event(3, "o-3", "BTC-USD", "sell", "0.0008", "41000"))
    assert closed.status == "flat" and closed.realized_pnl_total == D("1.5")
    # Flat: the bot moves to ETH-BTC (min size 0.001) and buys. No exit happened, so the
    # realized P&L must not move (safety credits every change of it to the bot's latest exit).
    position, _, _ = book(ledger_db, event(4, "o-4", "ETH-BTC", "buy", "1", "0.05"))
    assert position.quantity == D("1") and position.average_entry_price == D("0.05")
    assert position.realized_pnl_total == closed.realized_pnl_total, (
        f"realized P&L moved from {closed.realized_pnl_total} to {position.realized_pnl_total} "
        "on a buy"
    )


def test_the_invented_loss_trips_safetys_losing_streak_breaker_on_a_buy(ledger_db: Engine) -> None:
    """The same switch, the ledger's positions handed to safety as its bucket watcher does: a
    plain entry of the new product trips LOSING_STREAK on the old product's last exit."""
    from services.safety.config import SafetySettings
    from services.safety.handlers import record_order_event, record_position
    from services.safety.store import TABLES as SAFETY_TABLES
    from services.safety.store import DecisionRow
    from shared.db import create_tables
    from shared.outbox import OutboxMessage

    create_tables(ledger_db, [OutboxMessage, *SAFETY_TABLES])
    settings = SafetySettings(database_url=str(ledger_db.url), losing_exits_in_a_row=1)

    def safety(change):
        with Session(ledger_db, expire_on_commit=False) as session:
            result = change(session)
            session.commit()
            return result

    def exit_approved(ev: OrderEvent) -> None:
        safety(lambda s: s.add(DecisionRow(
            intent_id=ev.intent_id, bot_id=ev.bot_id, mode="mock", action="exit", approved=True,
            client_order_id=ev.client_order_id, market_time=ev.time, decided_at=ev.time,
            order_status="approved", final=False,
        )))  # fmt: skip

    trips = []
    for ev in [
        event(1, "o-1", "BTC-USD", "buy", "0.0015", "40000"),
        event(2, "o-2", "BTC-USD", "sell", "0.0007", "41000"),
        event(3, "o-3", "BTC-USD", "sell", "0.0008", "41000"),
        event(4, "o-4", "ETH-BTC", "buy", "1", "0.05"),  # after the switch: an entry
    ]:
        if ev.side == "sell":
            exit_approved(ev)
        position, _, _ = book(ledger_db, ev)
        trips += safety(lambda s, p=position: record_position(s, p, settings))
        trips += safety(lambda s, e=ev: record_order_event(s, e, settings))
    # Both exits made money (+0.7, +0.8): no breaker may trip.
    assert [(t.code, t.message) for t in trips] == []
