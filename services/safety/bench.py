"""Decision latency, run on purpose (not a test): ``decide`` alone, then ``decide`` with the
store's locked transaction (read the counters, write the decision and its outbox row, commit).

    python -m services.safety.bench [DATABASE_URL] [--intents 1000] [--bots 20]
    python -m services.safety.bench [DATABASE_URL] --cycle [--bots 100] [--rounds 6]

Without a URL it uses a fresh SQLite file. Intents are one event minute apart, spread over the
bots, so the 24-hour windows fill up as they would in a busy day. No NATS involved.

``--cycle`` runs safety's whole share of a booked order as ``make bench`` drives it (rounds of one
order per bot, entries and exits in turn): the wait for the ledger, the decision, two order events
(submitted, filled), the ledger's position, and a readiness pass over every bot after each of
those four steps. It prints CPU ms and SQL statements per order for each step: the figures to
compare before and after a change to safety's store, without the noise of four services and a
broker sharing the machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import event, update
from sqlmodel import Session, col

from services.safety.config import SafetySettings
from services.safety.facts import ledger_behind
from services.safety.handlers import (
    decide_and_store,
    readiness_of,
    record_order_event,
    record_position,
)
from services.safety.readiness import BotClock
from services.safety.rules import BotState, decide, decision_time
from services.safety.store import TABLES, DecisionRow, serialise_sqlite_writers
from shared.contracts import (
    Fill,
    OrderApproved,
    OrderEvent,
    PositionUpdate,
    Reason,
    TradeIntent,
    TrancheView,
)
from shared.db import READ_ONLY, create_tables, make_engine
from shared.outbox import OutboxMessage

T0 = datetime(2018, 1, 20, tzinfo=UTC)


def intents(count: int, bots: int) -> list[TradeIntent]:
    made = []
    for n in range(count):
        at = T0 + timedelta(minutes=n)
        iid = f"bench-{n}"
        made.append(
            TradeIntent(
                message_id=iid,
                correlation_id=iid,
                time=at,
                intent_id=iid,
                signal_id=iid,
                bot_id=f"bot-{n % bots}",
                product_id="ETH-BTC",
                action="entry",
                side="buy",
                quote_size=Decimal("0.01"),
                temperature=Decimal(80),
                band="hot",
                reason=Reason(code="SIGNAL", message="bench"),
                reference_price=Decimal("0.09"),
                market_time=at,
            )
        )
    return made


def order_intent(bot_id: str, round_: int, at: datetime) -> TradeIntent:
    """The round's intent of one bot: an entry in even rounds, the exit of it in odd ones."""
    iid = f"cycle-{bot_id}-{round_}"
    buying = round_ % 2 == 0
    return TradeIntent(
        message_id=iid, correlation_id=iid, time=at, intent_id=iid, signal_id=iid,
        bot_id=bot_id, product_id="ETH-BTC", action="entry" if buying else "exit",
        side="buy" if buying else "sell", quote_size=Decimal("0.01") if buying else None,
        base_size=None if buying else FILL_SIZE, temperature=Decimal(80), band="hot",
        reason=Reason(code="SIGNAL", message="bench"), reference_price=Decimal("0.09"),
        market_time=at,
    )  # fmt: skip


FILL_SIZE = Decimal("0.1")
UNLIMITED = 10**9


def order_event(approval: OrderApproved, status: str, at: datetime) -> OrderEvent:
    intent = approval.intent
    fills = []
    if status == "filled":
        fills = [Fill(trade_id=f"t-{intent.intent_id}", price=Decimal("0.09"), size=FILL_SIZE,
                      fee=Decimal(0), time=at)]  # fmt: skip
    return OrderEvent(
        message_id=f"order-{approval.client_order_id}-{status}", correlation_id=intent.intent_id,
        time=at, bot_id=intent.bot_id, product_id=intent.product_id, mode=approval.mode,
        intent_id=intent.intent_id, client_order_id=approval.client_order_id,
        action=intent.action, side=intent.side, status=status, fills=fills,
        filled_size=FILL_SIZE if fills else Decimal(0),
    )  # fmt: skip


def position_after(approval: OrderApproved, sequence: int, at: datetime) -> PositionUpdate:
    """The ledger's position after the order's fill: open after an entry, flat (a small gain
    realized) after an exit."""
    intent = approval.intent
    entered = intent.action == "entry"
    tranches = [
        TrancheView(index=1, client_order_id=approval.client_order_id, entry_price=Decimal("0.09"),
                    size=FILL_SIZE, remaining_size=FILL_SIZE, fees=Decimal(0),
                    realized_pnl=Decimal(0))
    ] if entered else []  # fmt: skip
    return PositionUpdate(
        message_id=f"position-{intent.bot_id}-{sequence}", correlation_id=intent.intent_id,
        time=at, bot_id=intent.bot_id, product_id=intent.product_id, mode=approval.mode,
        position_id=f"p-{intent.bot_id}", status="open" if entered else "flat",
        quantity=FILL_SIZE if entered else Decimal(0),
        average_entry_price=Decimal("0.09") if entered else None,
        break_even_price=Decimal("0.09") if entered else None,
        cost_basis=Decimal("0.009") if entered else Decimal(0), realized_pnl=Decimal(0),
        fees_paid=Decimal(0), tranches=tranches, sequence=sequence,
        realized_pnl_total=Decimal("0.0001") * (sequence // 2),
    )  # fmt: skip


class Steps:
    """CPU seconds (this process) and SQL statements per named step."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.read_engine = engine.execution_options(**{READ_ONLY: True})
        self.statements = 0
        self.cpu: dict[str, float] = {}
        self.counted: dict[str, int] = {}

        @event.listens_for(engine, "before_cursor_execute")
        def _count(*_args) -> None:
            self.statements += 1

    def run(self, name: str, change, *, write: bool = True):
        """``change`` in a transaction as ``Service.transact`` (write) or ``Service.read``."""
        started, before = time.process_time(), self.statements
        with Session(self.engine if write else self.read_engine, expire_on_commit=False) as s:
            result = change(s)
            if write:
                s.commit()
        self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - started
        self.counted[name] = self.counted.get(name, 0) + self.statements - before
        return result


def cycle(url: str, bots: int, rounds: int) -> None:
    """Safety's share of ``bots`` x ``rounds`` booked orders, step by step (module docstring)."""
    # The limits ``make bench`` lifts (bench/matrix.py): every signal books an order.
    settings = SafetySettings(
        database_url=url,
        max_entries_all_hour=UNLIMITED,
        max_entries_all_day=UNLIMITED,
        losing_exits_in_a_row=UNLIMITED,
    )
    engine = make_engine(url)
    serialise_sqlite_writers(engine)
    create_tables(engine, [OutboxMessage, *TABLES])
    steps = Steps(engine)
    names = [f"bot-{n}" for n in range(bots)]
    clocks = {name: BotClock() for name in names}
    fills = dict.fromkeys(names, 0)
    booked = 0

    def assess_all(session: Session) -> object:
        return readiness_of(session, set(names), clocks, settings, positions_synced=True,
                            markets={})  # fmt: skip

    def readiness_pass() -> None:
        steps.run("readiness passes", assess_all, write=False)

    for round_ in range(rounds):
        at = T0 + timedelta(minutes=10 * round_)
        approvals = []
        for name in names:
            intent = order_intent(name, round_, at)
            steps.run("wait for the ledger", lambda s, b=name: ledger_behind(s, b, "mock"),
                      write=False)  # fmt: skip
            decided = steps.run("decide", lambda s, i=intent: decide_and_store(
                s, i, settings, positions_synced=True, markets={}))  # fmt: skip
            clocks[name].saw("ETH-BTC", at)
            if isinstance(decided, OrderApproved):
                approvals.append(decided)
        readiness_pass()
        for status in ("submitted", "filled"):
            for approval in approvals:
                steps.run("order events", lambda s, e=order_event(approval, status, at):
                          record_order_event(s, e, settings))  # fmt: skip
            readiness_pass()
        for approval in approvals:
            bot_id = approval.intent.bot_id
            fills[bot_id] += 1
            position = position_after(approval, fills[bot_id], at)
            steps.run("positions", lambda s, p=position: record_position(s, p, settings))
        readiness_pass()
        booked += len(approvals)
    engine.dispose()
    print(f"database: {engine.dialect.name}  bots: {bots}  rounds: {rounds}  orders: {booked}")
    for name, seconds in steps.cpu.items():
        print(f"{name:<22} {seconds * 1000 / booked:7.3f} CPU ms/order  "
              f"{steps.counted[name] / booked:6.1f} statements/order")  # fmt: skip
    total = sum(steps.cpu.values()) * 1000 / booked
    print(f"{'total':<22} {total:7.3f} CPU ms/order  "
          f"{sum(steps.counted.values()) / booked:6.1f} statements/order")  # fmt: skip


def finish(engine, client_order_id: str) -> None:
    with Session(engine) as session:
        session.execute(
            update(DecisionRow)
            .where(col(DecisionRow.client_order_id) == client_order_id)
            .values(final=True, order_status="cancelled")
        )
        session.commit()


def summary(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"{name:<34} n={len(ms)}  mean {statistics.fmean(ms):7.3f} ms  "
        f"p50 {statistics.median(ms):7.3f} ms  p99 {p99:7.3f} ms  total {sum(ms) / 1000:6.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("database_url", nargs="?")
    parser.add_argument("--intents", type=int, default=1000)
    parser.add_argument("--bots", type=int, default=20)
    parser.add_argument("--cycle", action="store_true", help="whole orders, step by step")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    if args.cycle:
        cycle(url, args.bots, args.rounds)
        return
    settings = SafetySettings(database_url=url, entry_cooldown_s=0)
    batch = intents(args.intents, args.bots)

    pure = []
    limits = settings.limits_for("bot-0")
    for intent in batch:
        started = time.perf_counter()
        decide(intent, BotState(), limits, decision_time(intent))
        pure.append(time.perf_counter() - started)

    engine = make_engine(url)
    serialise_sqlite_writers(engine)
    create_tables(engine, [OutboxMessage, *TABLES])
    stored, approved = [], 0
    for intent in batch:
        started = time.perf_counter()
        with Session(engine, expire_on_commit=False) as session:
            message = decide_and_store(session, intent, settings, positions_synced=True, markets={})
            session.commit()
        stored.append(time.perf_counter() - started)
        if isinstance(message, OrderApproved):
            approved += 1
            finish(engine, message.client_order_id)  # the executor's fill, so bots trade on
    engine.dispose()
    print(f"database: {engine.dialect.name}  intents: {len(batch)}  approved: {approved}")
    print(summary("decide (pure)", pure))
    print(summary("decide + locked store transaction", stored))


if __name__ == "__main__":
    main()
