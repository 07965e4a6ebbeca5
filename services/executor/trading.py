"""The trading state as the executor knows it from safety's signed events, and the last check
before an order goes to the exchange (DESIGN.md, promise 3: defence in depth).

Safety decides; the executor still refuses, at the last step, every placement while the system
or the bot is ``halted`` and every entry or add while either is ``reducing`` (the stricter of
the two applies, as in safety). It learns the states only from ``tranche.safety.events``
messages that carry safety's signature, and keeps them in its database, so a restart does not
forget a halt. Its consumer starts with the events published after it was first created: a
state set before the executor ever ran is not known here (safety still refuses to approve).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlmodel import Field, Session, SQLModel

from shared.contracts import Reason, SafetyEvent
from shared.db import UtcDateTime

SYSTEM = "*"
STRICTNESS = {"active": 0, "reducing": 1, "halted": 2}


class TradingStateRow(SQLModel, table=True):
    __tablename__ = "executor_trading_states"

    scope: str = Field(primary_key=True, max_length=64)
    """A bot id, or ``*`` for the whole system."""
    state: str = Field(max_length=16)
    code: str = Field(max_length=64)
    message: str = Field(max_length=500)
    time: datetime = Field(sa_type=UtcDateTime)
    event_id: str = Field(max_length=128)


def record_state(session: Session, event: SafetyEvent) -> bool:
    """Keep the state a signed safety event sets (events without a state change nothing).
    Returns whether it changed what the executor knows."""
    if event.state is None:
        return False
    scope = event.bot_id or SYSTEM
    row = session.get(TradingStateRow, scope)
    if row is not None and row.event_id == event.message_id:
        return False  # a redelivery
    row = row or TradingStateRow(
        scope=scope, state="active", code="", message="", time=event.time, event_id=""
    )
    row.state, row.code, row.message = event.state, event.code, event.message[:500]
    row.time, row.event_id = event.time, event.message_id
    session.add(row)
    return True


_STATES = TradingStateRow.__table__  # type: ignore[attr-defined]  # SQLModel sets it
_STATES_FOR = sa_select(_STATES.c.scope, _STATES.c.state).where(
    _STATES.c.scope.in_([bindparam("system"), bindparam("bot")])
)
"""Compiled once: asked before every order goes out."""


def states_for(session: Session, bot_id: str) -> dict[str, str]:
    """``{"*": ..., bot_id: ...}`` as far as known (missing: active)."""
    rows = session.connection().execute(_STATES_FOR, {"system": SYSTEM, "bot": bot_id})
    return {row.scope: row.state for row in rows}


def placement_block(states: dict[str, str], bot_id: str, action: str) -> Reason | None:
    """Why an order of ``bot_id`` for ``action`` (entry, add, exit) may not be placed now, or
    ``None``. Pure: the stricter of the system's and the bot's state applies."""
    system, bot = states.get(SYSTEM, "active"), states.get(bot_id, "active")
    state, scope = (
        (system, "the system")
        if STRICTNESS.get(system, 0) >= STRICTNESS.get(bot, 0)
        else (bot, f"bot {bot_id}")
    )
    if state == "halted":
        return Reason(
            code="TRADING_HALTED",
            message=f"{scope} is halted (safety's last signed event): the order was not placed",
        )
    if state == "reducing" and action in ("entry", "add"):
        return Reason(
            code="TRADING_REDUCING",
            message=f"{scope} is reducing (safety's last signed event): only exits are placed",
        )
    return None
