"""The signal service's handlers wired in-process: a SQLite store in memory, evaluations and
intents kept in lists. Used by the signal unit tests and the outcome ring (the store and the bots
are the backtest's, ``tranche/backtest/inprocess.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from services.signal.handlers import SignalHandlers
from services.signal.store import TABLES
from shared.contracts import SignalEvaluation, TradeIntent
from tranche.backtest.inprocess import FixedBots, MemoryStore


@dataclass
class SignalHarness:
    handlers: SignalHandlers
    bots: FixedBots
    intents: list[TradeIntent]
    evaluations: list[SignalEvaluation]


def signal_harness() -> SignalHarness:
    store = MemoryStore(TABLES)
    intents: list[TradeIntent] = []
    evaluations: list[SignalEvaluation] = []

    async def publish(evaluation: SignalEvaluation) -> None:
        evaluations.append(evaluation)

    bots = FixedBots()
    handlers = SignalHandlers(
        bots=bots, transact=store.transact, publish_evaluation=publish, on_intent=intents.append
    )
    return SignalHarness(handlers, bots, intents, evaluations)
