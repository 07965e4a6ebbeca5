"""Decision latency, run on purpose (not a test): ``decide`` alone, then ``decide`` with the
store's locked transaction (read the counters, write the decision and its outbox row, commit).

    python -m services.safety.bench [DATABASE_URL] [--intents 1000] [--bots 20]

Without a URL it uses a fresh SQLite file. Intents are one event minute apart, spread over the
bots, so the 24-hour windows fill up as they would in a busy day. No NATS involved.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import update
from sqlmodel import Session, col

from services.safety.config import SafetySettings
from services.safety.handlers import decide_and_store
from services.safety.rules import BotState, decide, decision_time
from services.safety.store import TABLES, DecisionRow, serialise_sqlite_writers
from shared.contracts import OrderApproved, Reason, TradeIntent
from shared.db import create_tables, make_engine
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
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
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
