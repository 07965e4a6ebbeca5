"""Safety's two state changes straight on the database (no NATS), on SQLite and PostgreSQL:
order failures trip the breaker, it resets at its documented time with an event, never silently,
and a redelivered order event changes nothing."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlmodel import Session, col, select

from services.safety.config import SafetySettings
from services.safety.control import run_command
from services.safety.handlers import decide_and_store, record_order_event
from services.safety.store import TABLES, PositionRow, serialise_sqlite_writers
from shared.contracts import (
    Fill,
    OrderApproved,
    OrderEvent,
    OrderRejected,
    Reason,
    SafetyCommand,
    TradeIntent,
)
from shared.db import READ_ONLY, create_tables, make_engine
from shared.outbox import OutboxMessage, OutboxRelay

T0 = datetime(2018, 1, 20, 12, 0, tzinfo=UTC)


def entry(n: int, at: datetime) -> TradeIntent:
    iid = f"store-{n}"
    return TradeIntent(
        message_id=iid, correlation_id=iid, time=at, intent_id=iid, signal_id=iid,
        bot_id="failing", product_id="ETH-BTC", action="entry", side="buy",
        quote_size=Decimal("0.01"), temperature=Decimal(80), band="hot",
        reason=Reason(code="SIGNAL", message="t"), reference_price=Decimal("0.09"), market_time=at,
    )  # fmt: skip


def failed(approval: OrderApproved) -> OrderEvent:
    intent = approval.intent
    return OrderEvent(
        message_id=f"order-{approval.client_order_id}-failed", correlation_id=intent.intent_id,
        time=intent.market_time, bot_id=intent.bot_id, product_id=intent.product_id,
        mode=approval.mode, intent_id=intent.intent_id, client_order_id=approval.client_order_id,
        action=intent.action, side=intent.side, status="failed",
        reason=Reason(code="EXCHANGE_DOWN", message="t"),
    )  # fmt: skip


def breaker_settings(database_url: str) -> SafetySettings:
    """Three failed orders trip ORDER_FAILURES, which resets an hour later (event time)."""
    return SafetySettings(
        database_url=database_url, entry_cooldown_s=0, order_failures=3, breaker_reset_s=3600
    )


def deciding(run, settings: SafetySettings):
    """Decide entry ``n`` at ``at`` in one transaction (``run``: conftest's ``safety_run``)."""

    def decide_at(n: int, at: datetime):
        return run(
            lambda s: decide_and_store(s, entry(n, at), settings, positions_synced=True, markets={})
        )

    return decide_at


def test_order_failures_trip_the_breaker_which_resets_at_its_time_with_an_event(
    database_url: str, safety_run
) -> None:
    settings, run = breaker_settings(database_url), safety_run
    decide_at = deciding(run, settings)

    trips = []
    for n in range(3):
        approval = decide_at(n, T0 + timedelta(minutes=n))
        assert isinstance(approval, OrderApproved)
        trips += run(lambda s, a=approval: record_order_event(s, failed(a), settings))
        # A redelivered event neither counts twice nor trips twice.
        assert run(lambda s, a=approval: record_order_event(s, failed(a), settings)) == []
    assert [(t.code, t.state) for t in trips] == [("ORDER_FAILURES", "reducing")]

    refused = decide_at(10, T0 + timedelta(minutes=30))
    assert [r.code for r in refused.reasons] == ["REDUCING"]
    assert "3 failed orders" in refused.reasons[0].message
    # The breaker tripped at T0+2m and resets an hour later, in event time.
    again = decide_at(11, T0 + timedelta(minutes=63))
    assert isinstance(again, OrderApproved)
    staged = run(lambda s: s.exec(select(OutboxMessage).order_by(col(OutboxMessage.id))).all())
    events = [json.loads(m.payload) for m in staged if m.subject == "tranche.safety.events"]
    assert [(e["code"], e["state"]) for e in events] == [
        ("ORDER_FAILURES", "reducing"),
        ("BREAKER_RESET", "active"),
    ]
    # The failures before the reset no longer count: one more failure does not trip again.
    assert run(lambda s: record_order_event(s, failed(again), settings)) == []


def test_a_flatten_holds_a_breakers_reducing_until_the_operator_resumes(
    database_url: str, safety_run
) -> None:
    """ORDER_FAILURES put the bot in reducing until an hour later; the operator flattens it. The
    breaker's reset used to put it back to active under the flatten, and entries came back."""
    settings, run = breaker_settings(database_url), safety_run
    decide_at = deciding(run, settings)

    def command(name: str, at: datetime):
        order = SafetyCommand(command=name, command_id=f"{name}-1", bot_id="failing",
                              operator="alice", reason="get out")  # fmt: skip
        return run(lambda s: run_command(s, order, start_mode="mock", production_missing=[],
                                         now=at))  # fmt: skip

    for n in range(3):
        approval = decide_at(n, T0 + timedelta(minutes=n))
        run(lambda s, a=approval: record_order_event(s, failed(a), settings))
    assert command("flatten", T0 + timedelta(minutes=5)).code == "FLATTEN_REQUESTED"
    held = decide_at(10, T0 + timedelta(minutes=63))  # past the breaker's reset time
    assert isinstance(held, OrderRejected), "entries came back under the flatten"
    assert [r.code for r in held.reasons] == ["REDUCING"]
    assert "get out" in held.reasons[0].message
    assert command("resume", T0 + timedelta(minutes=64)).ok
    assert isinstance(decide_at(11, T0 + timedelta(minutes=65)), OrderApproved)


def filled(approval: OrderApproved, at: datetime) -> OrderEvent:
    intent = approval.intent
    fill = Fill(trade_id=f"t-{intent.intent_id}", price=Decimal("0.09"), size=Decimal("0.1"),
                fee=Decimal(0), time=at)  # fmt: skip
    return OrderEvent(
        message_id=f"order-{approval.client_order_id}-filled", correlation_id=intent.intent_id,
        time=at, bot_id=intent.bot_id, product_id=intent.product_id, mode=approval.mode,
        intent_id=intent.intent_id, client_order_id=approval.client_order_id,
        action=intent.action, side=intent.side, status="filled", fills=[fill],
        filled_size=Decimal("0.1"),
    )  # fmt: skip


def test_the_entry_cooldown_compares_times_of_one_clock(database_url: str) -> None:
    # Issue 15, reproduced 4: ENTRY_COOLDOWN_S=0 rejected an add because the exchange's fill
    # time (the wall clock) was compared with the replay's older market time.
    settings = SafetySettings(database_url=database_url, entry_cooldown_s=0)
    engine = make_engine(database_url)
    serialise_sqlite_writers(engine)
    create_tables(engine, [OutboxMessage, *TABLES])

    def run(change):
        with Session(engine, expire_on_commit=False) as session:
            result = change(session)
            session.commit()
            return result

    first = run(
        lambda s: decide_and_store(s, entry(20, T0), settings, positions_synced=True, markets={})
    )
    assert isinstance(first, OrderApproved)
    wall_clock = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
    run(lambda s: record_order_event(s, filled(first, wall_clock), settings))
    later = entry(21, T0 + timedelta(seconds=1))
    # The ledger has booked the fill (safety's position is as new as its last fill).
    run(lambda s: _book_position(s, later.bot_id))
    second = run(lambda s: decide_and_store(s, later, settings, positions_synced=True, markets={}))
    assert isinstance(second, OrderApproved), [r.message for r in second.reasons]
    engine.dispose()


def _book_position(session: Session, bot_id: str) -> None:
    row = PositionRow(bot_id=bot_id, mode="mock", sequence=1, is_open=True,
                      quantity=Decimal("0.1"), cost_basis=Decimal("0.009"), tranches=1,
                      last_entry_price=Decimal("0.09"))  # fmt: skip
    session.add(row)


def test_a_read_goes_on_beside_a_writer_that_holds_the_lock(database_url: str) -> None:
    """Readiness and the wait for the ledger read while decisions write: a read takes no write
    lock (SQLite: no BEGIN IMMEDIATE), so it neither waits for a writer nor makes one wait."""
    engine = make_engine(database_url)
    serialise_sqlite_writers(engine)
    create_tables(engine, [OutboxMessage, *TABLES])
    reads = engine.execution_options(**{READ_ONLY: True})
    with Session(engine) as writer:
        writer.add(PositionRow(bot_id="held", mode="mock", sequence=1))
        writer.flush()  # the write lock is held (SQLite) and the row locked (PostgreSQL)

        def read() -> list[str]:
            with Session(reads) as session:
                return list(session.exec(select(PositionRow.bot_id)).all())

        with ThreadPoolExecutor(1) as pool:
            # The writer has not committed: the read sees the state before it, at once.
            assert pool.submit(read).result(timeout=5) == []
        writer.commit()
    engine.dispose()


def test_the_outbox_relay_finds_what_is_pending_beside_a_writer_that_holds_the_lock(
    database_url: str,
) -> None:
    """Safety's relay looks for staged messages after every commit: that read took the write
    lock too (SQLite: BEGIN IMMEDIATE), so every pass queued behind a decision and the next
    decision behind it."""
    engine = make_engine(database_url)
    serialise_sqlite_writers(engine)
    create_tables(engine, [OutboxMessage, *TABLES])
    relay = OutboxRelay(engine, publish=lambda rows: asyncio.sleep(0))
    with Session(engine) as earlier:
        earlier.add(OutboxMessage(message_id="staged-1", subject="tranche.x", payload="{}"))
        earlier.commit()
    with Session(engine) as writer:
        writer.add(PositionRow(bot_id="held", mode="mock", sequence=1))
        writer.flush()  # the write lock is held (SQLite) and the row locked (PostgreSQL)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(relay._pending).result(timeout=5)
        assert [row.message_id for row in pending] == ["staged-1"]
        writer.commit()
    engine.dispose()
