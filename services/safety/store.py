"""Safety's durable state: one row per bot and mode, one decision per intent."""

from __future__ import annotations

import json
from datetime import datetime

from sqlmodel import Field, Session, SQLModel, col, select

from services.safety.rules import BotState
from shared import subjects
from shared.contracts import Mode, OrderApproved, OrderRejected
from shared.db import UtcDateTime
from shared.outbox import stage


class BotStateRow(SQLModel, table=True):
    __tablename__ = "safety_bot_state"

    bot_id: str = Field(primary_key=True, max_length=64)
    mode: str = Field(primary_key=True, max_length=16)
    last_entry_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    last_exit_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class DecisionRow(SQLModel, table=True):
    __tablename__ = "safety_decisions"

    intent_id: str = Field(primary_key=True, max_length=64)
    bot_id: str = Field(index=True, max_length=64)
    mode: str = Field(max_length=16)
    approved: bool
    action: str = Field(max_length=8)
    client_order_id: str | None = Field(default=None, max_length=64)
    reasons: str = "[]"
    """JSON list of {code, message}."""
    decided_at: datetime = Field(index=True, sa_type=UtcDateTime)


def decision_exists(session: Session, intent_id: str) -> bool:
    return session.get(DecisionRow, intent_id) is not None


def load_state(session: Session, bot_id: str, mode: Mode) -> BotState:
    # FOR UPDATE: two safety instances deciding for one bot queue here on PostgreSQL.
    row = session.exec(
        select(BotStateRow)
        .where(BotStateRow.bot_id == bot_id, BotStateRow.mode == mode)
        .with_for_update()
    ).first()
    if row is None:
        return BotState()
    return BotState(last_entry_at=row.last_entry_at, last_exit_at=row.last_exit_at)


def save_decision(
    session: Session, decision: OrderApproved | OrderRejected, state: BotState
) -> None:
    """Store the decision, the bot's new state and the message to send, in one transaction."""
    intent = decision.intent
    approved = isinstance(decision, OrderApproved)
    row = session.get(BotStateRow, (intent.bot_id, decision.mode)) or BotStateRow(
        bot_id=intent.bot_id, mode=decision.mode
    )
    row.last_entry_at, row.last_exit_at = state.last_entry_at, state.last_exit_at
    session.add(row)
    session.add(
        DecisionRow(
            intent_id=intent.intent_id,
            bot_id=intent.bot_id,
            mode=decision.mode,
            approved=approved,
            action=intent.action,
            client_order_id=decision.client_order_id if approved else None,  # type: ignore[union-attr]
            reasons=json.dumps(
                [] if approved else [r.model_dump() for r in decision.reasons]  # type: ignore[union-attr]
            ),
            decided_at=decision.decided_at,
        )
    )
    family = subjects.ORDERS_APPROVED if approved else subjects.ORDERS_REJECTED
    stage(session, subjects.for_token(family, intent.bot_id), decision)


def recent_decisions(session: Session, limit: int = 50) -> list[DecisionRow]:
    return list(
        session.exec(select(DecisionRow).order_by(col(DecisionRow.decided_at).desc()).limit(limit))
    )
