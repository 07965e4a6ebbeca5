"""What the signal service remembers: every signal it acted on, so a redelivery acts once."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlmodel import Field, Session, SQLModel, select

from shared import subjects
from shared.contracts import Reason, TradeIntent
from shared.db import ExactDecimal, InsertUnlessThere, UtcDateTime
from shared.outbox import stage


class SignalRecord(SQLModel, table=True):
    __tablename__ = "signal_records"

    signal_id: str = Field(primary_key=True, max_length=200)
    bot_id: str = Field(index=True, max_length=64)
    side: str = Field(max_length=4)
    time: datetime
    intent_id: str | None = Field(default=None, max_length=64)
    outcome_code: str = Field(max_length=64)
    outcome: str = Field(max_length=500)


_RECORDS = SignalRecord.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
_RECORD = InsertUnlessThere(_RECORDS, ["signal_id"])
"""Core, compiled once: every confirmed signal is stored (a backtest hundreds of times a run),
and the ORM's identity map and unit of work bought nothing. Its answer says whether the signal
was handled before."""


def record(
    session: Session,
    *,
    signal_id: str,
    bot_id: str,
    side: str,
    time: datetime,
    intent: TradeIntent | None,
    reason: Reason,
) -> bool:
    """Store the signal's outcome and, in the same transaction, the intent it produced; False
    (and nothing stored) when the signal was handled before: a redelivery acts once."""
    stored = _RECORD(
        session,
        {
            "signal_id": signal_id,
            "bot_id": bot_id,
            "side": side,
            "time": time,
            "intent_id": intent.intent_id if intent else None,
            "outcome_code": reason.code,
            "outcome": reason.message,
        },
    )
    if not stored:
        return False
    if intent is not None:
        stage(session, subjects.for_token(subjects.INTENTS, intent.bot_id), intent)
    return True


class FlattenRecord(SQLModel, table=True):
    """A flatten an operator asked for and that is not done yet: it stands across restarts."""

    __tablename__ = "signal_flattens"

    bot_id: str = Field(primary_key=True, max_length=64)
    reason: str = Field(max_length=500)
    event_id: str = Field(max_length=200)


def flattens(session: Session) -> dict[str, str]:
    """Every standing flatten: bot -> reason."""
    return {row.bot_id: row.reason for row in session.exec(select(FlattenRecord))}


class FeedProgress(SQLModel, table=True):
    """The time of the last tick a feed published per product: a replay started again resumes
    after it, so event time never goes backwards."""

    __tablename__ = "signal_feed_progress"

    product_id: str = Field(primary_key=True, max_length=64)
    last_time: datetime = Field(sa_type=UtcDateTime)
    source: str = Field(max_length=200)


def feed_progress(session: Session, product_id: str) -> datetime | None:
    found = session.get(FeedProgress, product_id)
    return found.last_time if found is not None else None


def save_feed_progress(session: Session, product_id: str, time: datetime, source: str) -> None:
    found = session.get(FeedProgress, product_id)
    if found is None:
        session.add(FeedProgress(product_id=product_id, last_time=time, source=source[:200]))
    elif time > found.last_time:
        found.last_time, found.source = time, source[:200]
        session.add(found)


class StopStateRow(SQLModel, table=True):
    """Per bot, what the signal service knows of its stop on the exchange
    (services/signal/handlers.py keeps it in memory and here, so a restart goes on where it
    stopped): the stop last asked (its intent, the position state it was asked for, its prices
    and its order's last status), how many stops of the current position state ended without
    being meant to, and how many safety refused, when and why (the back-off in event time).

    Written in the transaction that stores the stop's intent, and on each order event or
    refusal of it (an upsert of the bot's row: a redelivery writes the same row again)."""

    __tablename__ = "signal_stop_states_v1"

    bot_id: str = Field(primary_key=True, max_length=64)
    asked_intent_id: str | None = Field(default=None, max_length=200)
    position_id: str | None = Field(default=None, max_length=128)
    sequence: int | None = None
    size: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    stop_price: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    limit_price: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    status: str | None = Field(default=None, max_length=32)
    attempt_state: str = Field(default="", max_length=200)
    attempts: int = 0
    refusal_state: str | None = Field(default=None, max_length=200)
    refusals: int = 0
    refused_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    retry_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    refusal_codes: str = Field(default="", max_length=500)


def save_stop_state(session: Session, row: StopStateRow) -> None:
    """Upsert the bot's row (idempotent: the same state writes the same row)."""
    found = session.get(StopStateRow, row.bot_id)
    if found is None:
        session.add(row)
        return
    for name, value in row.model_dump().items():
        setattr(found, name, value)
    session.add(found)


def stop_states(session: Session) -> list[StopStateRow]:
    return list(session.exec(select(StopStateRow)))


class SafetyEventSeen(SQLModel, table=True):
    """A safety event (a flatten asked, a resume) the signal service acted on, by its id: the
    same event again, a redelivery or a re-publish of an old one with safety's valid signature,
    is not acted on twice (a week-old flatten, sent again, sold the bot's new position)."""

    __tablename__ = "signal_safety_events_v1"

    event_id: str = Field(primary_key=True, max_length=200)
    bot_id: str | None = Field(default=None, max_length=64)
    code: str = Field(max_length=64)


_SEEN = InsertUnlessThere(SafetyEventSeen.__table__, ["event_id"])  # type: ignore[attr-defined]  # SQLModel sets __table__ on table models


def first_time(session: Session, event_id: str, bot_id: str | None, code: str) -> bool:
    """Note the safety event as acted on, in the caller's transaction; False when it was
    before (then the caller changes nothing)."""
    return _SEEN(session, {"event_id": event_id, "bot_id": bot_id, "code": code})


class HighRow(SQLModel, table=True):
    """Per bot, the highest price since its position opened (the trailing stop's mark), so that
    a restart goes on from it: kept only in memory, a restart lost it, and the trailing stop
    stood down until the price came back above break-even."""

    __tablename__ = "signal_highs_v1"

    bot_id: str = Field(primary_key=True, max_length=64)
    position_id: str = Field(max_length=128)
    high: Decimal = Field(sa_type=ExactDecimal)


def save_high(session: Session, bot_id: str, position_id: str, high: Decimal) -> None:
    row = session.get(HighRow, bot_id)
    if row is None:
        session.add(HighRow(bot_id=bot_id, position_id=position_id, high=high))
    else:
        row.position_id, row.high = position_id, high
        session.add(row)


def highs(session: Session) -> dict[str, tuple[str, Decimal]]:
    """Every bot's kept mark: bot -> (position id, high)."""
    return {row.bot_id: (row.position_id, row.high) for row in session.exec(select(HighRow))}


TABLES: list[type[SQLModel]] = [
    SignalRecord, FlattenRecord, FeedProgress, StopStateRow, SafetyEventSeen, HighRow
]  # fmt: skip
"""The signal service's tables (the service and the backtest create these)."""
