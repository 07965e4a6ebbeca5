"""The signal service's handlers wired in-process: a SQLite store in memory, evaluations and
intents kept in lists. Used by the signal unit tests and the outcome ring."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy.pool import StaticPool
from sqlmodel import Session, create_engine

from services.signal.bots import RunningBot, runtime_for
from services.signal.handlers import SignalHandlers
from services.signal.store import FlattenRecord, SignalRecord
from shared.bots import BotState
from shared.catalog import Bot
from shared.contracts import SignalEvaluation, TradeIntent
from shared.db import create_tables
from shared.outbox import OutboxMessage

T = TypeVar("T")


@dataclass
class FixedBots:
    running: dict[str, RunningBot] = field(default_factory=dict)

    def add(self, bot_id: str, bot: Bot, status: str = "active") -> RunningBot:
        running = RunningBot(BotState(bot_id, bot, status, 1), runtime_for(bot_id, bot))  # type: ignore[arg-type]
        self.running[bot_id] = running
        return running

    def get(self, bot_id: str) -> RunningBot | None:
        return self.running.get(bot_id)

    def trading(self, product_id: str) -> list[tuple[str, RunningBot]]:
        return [(b, r) for b, r in self.running.items() if r.config.product_id == product_id]


@dataclass
class SignalHarness:
    handlers: SignalHandlers
    bots: FixedBots
    intents: list[TradeIntent]
    evaluations: list[SignalEvaluation]


def signal_harness() -> SignalHarness:
    engine = create_engine(
        "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
    )
    create_tables(engine, [SignalRecord, FlattenRecord, OutboxMessage])
    intents: list[TradeIntent] = []
    evaluations: list[SignalEvaluation] = []

    async def transact(change: Callable[[Session], T]) -> T:
        with Session(engine, expire_on_commit=False) as session:
            result = change(session)
            session.commit()
            return result

    async def publish(evaluation: SignalEvaluation) -> None:
        evaluations.append(evaluation)

    bots = FixedBots()
    handlers = SignalHandlers(
        bots=bots, transact=transact, publish_evaluation=publish, on_intent=intents.append
    )
    return SignalHarness(handlers, bots, intents, evaluations)
