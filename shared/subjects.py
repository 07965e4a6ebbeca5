"""Subject names: the public message API. Every subject starts with ``tranche.``."""

from __future__ import annotations

PREFIX = "tranche"

MARKET_TICKER = f"{PREFIX}.market.ticker"
SIGNALS_INJECT = f"{PREFIX}.signals.inject"
SIGNALS_EVALUATED = f"{PREFIX}.signals.evaluated"
INTENTS = f"{PREFIX}.intents"
ORDERS_APPROVED = f"{PREFIX}.orders.approved"
ORDERS_REJECTED = f"{PREFIX}.orders.rejected"
ORDERS_EVENTS = f"{PREFIX}.orders.events"
LEDGER_POSITIONS = f"{PREFIX}.ledger.positions"
LEDGER_QUERY = f"{PREFIX}.ledger.query"
LEDGER_BREACHES = f"{PREFIX}.ledger.breaches"
"""The ledger booked a fourth entry tranche (durable); safety turns it into its own
``TRANCHE_CAP_BREACHED`` safety event, so ``tranche.safety.events`` has one publisher."""
SAFETY_EVENTS = f"{PREFIX}.safety.events"
SAFETY_READINESS = f"{PREFIX}.safety.readiness"
"""Core NATS: ``BotReadiness``, whether a bot could trade now and why not (a status, not a fact)."""
SAFETY_CONTROL = f"{PREFIX}.safety.control"
"""Core NATS request/reply: operator commands (halt, resume, flatten, mode, limits reset)."""
DLQ = f"{PREFIX}.dlq"
BOTS_CHANGED = f"{PREFIX}.bots.changed"
"""A bot was created, changed, paused, resumed or removed at run time (durable)."""

POSITIONS_BUCKET = "tranche_positions"
BOTS_BUCKET = "tranche_bots"
"""Every bot's configuration and status while the system runs (key = bot id)."""


def all_of(family: str) -> str:
    """The wildcard for every subject of a family: ``tranche.intents`` -> ``tranche.intents.>``."""
    return f"{family}.>"


def for_token(family: str, token: str) -> str:
    """``for_token(INTENTS, "bot-1")`` -> ``tranche.intents.bot-1``."""
    return f"{family}.{token}"


def last_token(subject: str) -> str:
    """The bot id or product id a subject ends with."""
    return subject.rsplit(".", 1)[-1]
