"""Safety's durable state and the facts its counters are derived from.

* ``safety_decision_log``: one row per intent (the audit trail), approvals with their order's
  progress (fills, final status, realized P&L of an exit). Every counter, cooldown and breaker is
  computed from these rows and from ``safety_fills``, so a restart loses nothing.
* ``safety_positions``: the ledger's latest position per bot and mode, copied from the
  ``tranche_positions`` bucket so every safety instance decides on the same one.
* ``safety_trading_states``: ``active`` / ``reducing`` / ``halted`` per bot and for the whole
  system (scope ``*``, which also holds the current mode). These rows are the locks too.

Concurrency: :func:`lock_scopes` takes the system row, then the bot's row, ``FOR UPDATE`` on
PostgreSQL (always in that order, so two instances never deadlock); on SQLite the safety engine
starts every transaction with ``BEGIN IMMEDIATE`` (:func:`serialise_sqlite_writers`), one writer
at a time. The decision is checked for, made and written inside that lock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Engine, bindparam, event, func, insert, or_, update
from sqlmodel import Field, Session, SQLModel, col, select

from services.safety.breakers import ExitResult, Trip, stricter
from services.safety.rules import (
    Decision,
    Position,
)
from shared import subjects
from shared.contracts import (
    FINAL_ORDER_STATUSES,
    Mode,
    OrderApproved,
    OrderEvent,
    OrderRejected,
    PositionUpdate,
    SafetyEvent,
    TradingState,
)
from shared.db import READ_ONLY, ExactDecimal, InsertUnlessThere, UtcDateTime, insert_row
from shared.money import utc_now
from shared.outbox import stage

SYSTEM = "*"
ZERO = Decimal(0)
UNKNOWN_AT_EXCHANGE = "unknown_at_exchange"
"""The order status the executor gives an order the exchange has lost (not final)."""


class DecisionRow(SQLModel, table=True):
    __tablename__ = "safety_decision_log"

    intent_id: str = Field(primary_key=True, max_length=128)
    bot_id: str = Field(index=True, max_length=64)
    mode: str = Field(max_length=16)
    action: str = Field(max_length=8)
    approved: bool
    client_order_id: str | None = Field(default=None, index=True, max_length=128)
    market_time: datetime = Field(index=True, sa_type=UtcDateTime)
    """Event time the decision was made at."""
    notional: Decimal = Field(default=ZERO, sa_type=ExactDecimal)
    base_size: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    reference_price: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    cost_per_unit: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    """An exit's cost basis per unit when approved (for its realized P&L)."""
    reasons: str = "[]"
    adjustments: str = "[]"
    counters: str = "{}"
    decided_at: datetime = Field(index=True, sa_type=UtcDateTime)
    order_status: str = Field(default="", max_length=24)
    final: bool = True
    """A rejection is final at once; an approval once its order is filled/cancelled/.../failed."""
    final_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    filled_size: Decimal = Field(default=ZERO, sa_type=ExactDecimal)
    last_fill_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    realized_pnl: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    counted: bool = True
    """False after ``tranche limits reset`` (mock only): no longer counts for limits."""
    breaker_counted: bool = True
    """False after a breaker reset or a resume: no longer counts for breakers."""


class FillRow(SQLModel, table=True):
    __tablename__ = "safety_fills"

    trade_id: str = Field(primary_key=True, max_length=128)
    client_order_id: str = Field(primary_key=True, max_length=128)
    bot_id: str = Field(index=True, max_length=64)
    mode: str = Field(max_length=16)
    side: str = Field(max_length=4)
    price: Decimal = Field(sa_type=ExactDecimal)
    size: Decimal = Field(sa_type=ExactDecimal)
    fee: Decimal = Field(sa_type=ExactDecimal)
    time: datetime = Field(sa_type=UtcDateTime)


class PositionRow(SQLModel, table=True):
    __tablename__ = "safety_positions"

    bot_id: str = Field(primary_key=True, max_length=64)
    mode: str = Field(primary_key=True, max_length=16)
    sequence: int = -1
    is_open: bool = False
    """Kept beside ``quantity`` because SQLite stores exact decimals as text (no ``> 0``)."""
    quantity: Decimal = Field(default=ZERO, sa_type=ExactDecimal)
    cost_basis: Decimal = Field(default=ZERO, sa_type=ExactDecimal)
    tranches: int = 0
    last_entry_price: Decimal | None = Field(default=None, sa_type=ExactDecimal)


class RealizedRow(SQLModel, table=True):
    """The ledger's ``realized_pnl_total`` last seen per bot and mode: the breakers' only source
    of realized P&L (what changed between two position messages was realized by an exit)."""

    __tablename__ = "safety_realized_v1"

    bot_id: str = Field(primary_key=True, max_length=64)
    mode: str = Field(primary_key=True, max_length=16)
    realized_pnl_total: Decimal = Field(default=ZERO, sa_type=ExactDecimal)


class TradingStateRow(SQLModel, table=True):
    __tablename__ = "safety_trading_states"

    scope: str = Field(primary_key=True, max_length=64)
    """A bot id, or ``*`` for the whole system."""
    state: str = Field(default="active", max_length=16)
    code: str = Field(default="", max_length=64)
    message: str = Field(default="", max_length=500)
    caused_by: str = Field(default="", max_length=200)
    changed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    resets_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    """Event time a tripped breaker resets by itself."""
    mode: str | None = Field(default=None, max_length=16)
    """System row only: the mode approvals are made in now (``None``: the start mode)."""


TABLES: list[type[SQLModel]] = [DecisionRow, FillRow, PositionRow, RealizedRow, TradingStateRow]
_D = DecisionRow.__table__


def serialise_sqlite_writers(engine: Engine) -> None:
    """SQLite: start every transaction with ``BEGIN IMMEDIATE`` so reading the counters and
    writing the decision happen under one write lock (pysqlite would begin lazily, at the first
    write, letting two instances read the same counters)."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        # A read (Service.read: readiness, the wait for the ledger, the HTTP views) takes no
        # write lock: WAL gives it a consistent snapshot beside the writer. It took the lock
        # before, so every read queued behind every decision and every decision behind reads.
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


# -- locks and trading states ----------------------------------------------------------------


# Inserts unless the row is there: two instances writing a new key at once then wait for each
# other (the row lock that follows) instead of one failing on the key.
_NEW_SCOPE = InsertUnlessThere(TradingStateRow.__table__, ["scope"])
_NEW_POSITION = InsertUnlessThere(PositionRow.__table__, ["bot_id", "mode"])


def _ensure_row(session: Session, scope: str) -> None:
    _NEW_SCOPE(session, {"scope": scope, "state": "active"})


_LOCKED = (
    select(TradingStateRow).where(TradingStateRow.scope == bindparam("scope")).with_for_update()
)
"""Built once: every message locks two scopes, and building the statement each time cost as much
as running it."""


def lock_scope(session: Session, scope: str) -> TradingStateRow:
    """The scope's row, locked; made (``active``) the first time. The insert runs only when the
    row is missing: every message locks two scopes, and the rows are there after the first."""
    row = session.exec(_LOCKED, params={"scope": scope}).first()
    if row is None:
        _ensure_row(session, scope)
        row = session.exec(_LOCKED, params={"scope": scope}).one()
    return row


def lock_scopes(session: Session, bot_id: str | None) -> tuple[TradingStateRow, TradingStateRow]:
    """Lock the system row, then the bot's (always this order: no deadlock between instances).
    With ``bot_id=None`` both are the system row."""
    system = lock_scope(session, SYSTEM)
    return system, (lock_scope(session, bot_id) if bot_id else system)


def latest_decision_times(session: Session) -> dict[str, datetime]:
    """Each bot's newest decision's event time: the bots safety knows, and their clocks."""
    rows = session.exec(
        select(DecisionRow.bot_id, func.max(DecisionRow.market_time)).group_by(DecisionRow.bot_id)
    ).all()
    return {bot_id: at for bot_id, at in rows if at is not None}


def current_mode(system: TradingStateRow, start_mode: Mode) -> Mode:
    # a str column, written only from a validated control command's Mode
    return system.mode or start_mode  # type: ignore[return-value]


def mode_now(session: Session, start_mode: Mode) -> Mode:
    """The mode approvals are made in now, read without locking (``start_mode`` until an
    operator switched it)."""
    system = session.get(TradingStateRow, SYSTEM)
    return current_mode(system, start_mode) if system is not None else start_mode


def safety_event(
    *,
    code: str,
    message: str,
    bot_id: str | None,
    state: TradingState | None,
    caused_by: str,
    message_id: str,
    time: datetime,
) -> SafetyEvent:
    return SafetyEvent(
        message_id=message_id[:128],
        correlation_id=message_id[:128],
        time=time,
        code=code,
        message=message[:500],
        bot_id=bot_id if bot_id and bot_id != SYSTEM else None,
        state=state,
        caused_by=caused_by[:200],
    )


def set_state(
    session: Session,
    row: TradingStateRow,
    state: TradingState,
    *,
    code: str,
    message: str,
    caused_by: str,
    resets_at: datetime | None,
    event_id: str,
    time: datetime,
) -> SafetyEvent:
    """Change a scope's trading state and stage the ``tranche.safety.events`` message for it."""
    row.state, row.code, row.message = state, code, message[:500]
    row.caused_by, row.changed_at, row.resets_at = caused_by[:200], utc_now(), resets_at
    session.add(row)
    news = safety_event(
        code=code,
        message=message,
        bot_id=row.scope,
        state=state,
        caused_by=caused_by,
        message_id=event_id,
        time=time,
    )
    stage(session, subjects.SAFETY_EVENTS, news)
    return news


def forgive_breaker_facts(session: Session, bot_id: str | None) -> None:
    """After a reset or a resume, old losses and failures no longer count for breakers."""
    statement = update(DecisionRow).values(breaker_counted=False)
    if bot_id:
        statement = statement.where(col(DecisionRow.bot_id) == bot_id)
    session.execute(statement)


def reset_due_breakers(
    session: Session, rows: Iterable[TradingStateRow], now: datetime
) -> list[SafetyEvent]:
    """A tripped breaker whose reset time (event time) has passed goes back to ``active``, with
    an event saying so: never silently."""
    news = []
    for row in rows:
        if row.state != "active" and row.resets_at is not None and row.resets_at <= now:
            forgive_breaker_facts(session, None if row.scope == SYSTEM else row.scope)
            news.append(
                set_state(
                    session,
                    row,
                    "active",
                    code="BREAKER_RESET",
                    message=f"{row.code} tripped until {row.resets_at:%Y-%m-%d %H:%M:%S}Z; "
                    "trading resumes",
                    caused_by="breaker reset time",
                    resets_at=None,
                    event_id=f"safety-reset-{row.scope}-{row.resets_at.isoformat()}",
                    time=now,
                )
            )
    return news


# -- decisions ------------------------------------------------------------------------------


def save_decision(
    session: Session,
    message: OrderApproved | OrderRejected,
    decision: Decision,
    position: Position | None,
) -> None:
    """Store the decision and stage its message, in the caller's (locked) transaction."""
    intent = message.intent
    approved = isinstance(message, OrderApproved)
    cost_per_unit = None
    if approved and intent.action == "exit" and position is not None and position.is_open:
        cost_per_unit = position.cost_basis / position.quantity
    # A Core insert (the model's defaults for the rest): building the ORM object and flushing
    # it at commit cost more than the rest of storing the decision.
    insert_row(
        session,
        DecisionRow,
        intent_id=intent.intent_id,
        bot_id=intent.bot_id,
        mode=message.mode,
        action=intent.action,
        approved=approved,
        client_order_id=message.client_order_id if approved else None,
        market_time=message.time,
        notional=decision.notional,
        base_size=intent.base_size,
        reference_price=intent.reference_price,
        cost_per_unit=cost_per_unit,
        reasons=json.dumps([r.model_dump() for r in decision.reasons]),
        adjustments=json.dumps([r.model_dump() for r in decision.adjustments]),
        counters=json.dumps(decision.counters.as_strings()),
        decided_at=message.decided_at,
        order_status="approved" if approved else "rejected",
        final=not approved,
    )
    family = subjects.ORDERS_APPROVED if approved else subjects.ORDERS_REJECTED
    stage(session, subjects.for_token(family, intent.bot_id), message)


def decisions(session: Session, bot_id: str | None = None, limit: int = 50) -> list[DecisionRow]:
    query = select(DecisionRow)
    if bot_id:
        query = query.where(DecisionRow.bot_id == bot_id)
    query = query.order_by(col(DecisionRow.decided_at).desc()).limit(limit)
    return list(session.exec(query).all())


# -- positions (from the tranche_positions bucket) ---------------------------------------------


_P = PositionRow.__table__
_SEQUENCE = (
    select(_P.c.sequence)
    .where(_P.c.bot_id == bindparam("bot_id"), _P.c.mode == bindparam("mode"))
    .with_for_update()
)
_R = RealizedRow.__table__
_REALIZED = (
    select(_R.c.realized_pnl_total)
    .where(_R.c.bot_id == bindparam("bot_id"), _R.c.mode == bindparam("mode"))
    .with_for_update()
)
_LATEST_EXIT = (
    select(_D.c.intent_id, _D.c.realized_pnl, _D.c.final, _D.c.client_order_id)
    .where(
        _D.c.bot_id == bindparam("bot_id"),
        _D.c.mode == bindparam("mode"),
        _D.c.action == "exit",
        _D.c.approved.is_(True),
    )
    .order_by(_D.c.decided_at.desc())
    .limit(1)
)


def _first(session: Session, statement, **params):
    """The first row of a prebuilt Core statement run on the session's connection (a handler's
    statements, built and run through the ORM each time, cost five times the CPU)."""
    return session.connection().execute(statement, params).first()


def save_position(session: Session, update_: PositionUpdate) -> bool:
    """Keep the newest position per bot and mode (by the ledger's sequence); an older update
    changes nothing, a repeated one stores the same again. Returns whether it was kept."""
    key = {"bot_id": update_.bot_id, "mode": update_.mode}
    stored = _first(session, _SEQUENCE, **key)
    if stored is None:
        # Every safety instance hears every update: the first of a bot's must not fail on the key.
        _NEW_POSITION(session, key | {"sequence": -1, "is_open": False, "quantity": ZERO,
                                      "cost_basis": ZERO, "tranches": 0})  # fmt: skip
        stored = _first(session, _SEQUENCE, **key)
    # An equal sequence is newer too: the ledger closes a position when an exit order finishes
    # without a new fill (dust), at the same fill count (the bucket delivers updates in order).
    if stored.sequence > update_.sequence:
        return False
    is_open = update_.status == "open" and update_.quantity > 0
    session.connection().execute(
        update(_P)
        .where(_P.c.bot_id == update_.bot_id, _P.c.mode == update_.mode)
        .values(
            sequence=update_.sequence,
            is_open=is_open,
            quantity=update_.quantity if is_open else ZERO,
            cost_basis=update_.cost_basis,
            tranches=len(update_.tranches) if update_.status == "open" else 0,
            last_entry_price=update_.tranches[-1].entry_price if update_.tranches else None,
        )
    )
    return True


def note_realized(session: Session, update_: PositionUpdate) -> Decimal | None:
    """How much the ledger's realized P&L of the bot moved since the last position seen (call it
    for a newer position only). ``None`` the first time: that total is the baseline, realized
    before safety watched (its exits are not safety's to count)."""
    key = {"bot_id": update_.bot_id, "mode": update_.mode}
    stored = _first(session, _REALIZED, **key)
    total = update_.realized_pnl_total
    if stored is None:
        session.connection().execute(insert(_R).values(**key, realized_pnl_total=total))
        return None
    session.connection().execute(
        update(_R)
        .where(_R.c.bot_id == update_.bot_id, _R.c.mode == update_.mode)
        .values(realized_pnl_total=total)
    )
    return total - stored.realized_pnl_total


@dataclass(frozen=True)
class BookedExit:
    """The approved exit a realized P&L change was booked on."""

    client_order_id: str | None
    final: bool


def book_realized(session: Session, bot_id: str, mode: str, change: Decimal) -> BookedExit | None:
    """Add ``change`` (quote) to the realized P&L of the bot's latest approved exit: the exit
    order the ledger just booked (only an exit realizes, and only what safety approved is
    placed). Its order event may reach safety after the ledger's position does, so the exit is
    not required to have fills recorded yet. Returns that exit (``None``: no exit approved)."""
    row = _first(session, _LATEST_EXIT, bot_id=bot_id, mode=mode)
    if row is None:
        return None
    session.connection().execute(
        update(_D)
        .where(_D.c.intent_id == row.intent_id)
        .values(realized_pnl=(row.realized_pnl or ZERO) + change)
    )
    return BookedExit(client_order_id=row.client_order_id, final=row.final)


# -- order events -----------------------------------------------------------------------------


_ORDER = select(
    _D.c.intent_id, _D.c.final, _D.c.order_status, _D.c.filled_size, _D.c.last_fill_at
).where(_D.c.client_order_id == bindparam("client_order_id"))
_F = FillRow.__table__
_FILL_KNOWN = select(_F.c.trade_id).where(
    _F.c.trade_id == bindparam("trade_id"), _F.c.client_order_id == bindparam("client_order_id")
)


def apply_order_event(session: Session, event_: OrderEvent) -> bool:
    """Record an order event's new fills and, once, its final status. Returns whether this event
    made the approved order final (the caller then checks the breakers). Idempotent: fills are
    keyed by trade id, the final status is set once."""
    cid = event_.client_order_id
    row = _first(session, _ORDER, client_order_id=cid)
    if row is None:
        return False
    filled_size, last_fill_at = row.filled_size, row.last_fill_at
    new_fills = []
    for fill in event_.fills:
        if _first(session, _FILL_KNOWN, trade_id=fill.trade_id, client_order_id=cid) is not None:
            continue
        new_fills.append({
            "trade_id": fill.trade_id, "client_order_id": cid, "bot_id": event_.bot_id,
            "mode": event_.mode, "side": event_.side, "price": fill.price, "size": fill.size,
            "fee": fill.fee, "time": fill.time,
        })  # fmt: skip
        filled_size += fill.size
        last_fill_at = max(t for t in (last_fill_at, fill.time) if t is not None)
    if new_fills:
        session.connection().execute(insert(_F), new_fills)
    changes: dict[str, object] = {}
    if new_fills:
        changes |= {"filled_size": filled_size, "last_fill_at": last_fill_at}
    made_final = not row.final and event_.status in FINAL_ORDER_STATUSES
    if not row.final and event_.status != row.order_status:
        changes["order_status"] = event_.status
    if made_final:
        changes |= {"final": True, "final_at": event_.time}
    if changes:
        session.connection().execute(
            update(_D).where(_D.c.intent_id == row.intent_id).values(**changes)
        )
    return made_final


def fills_of(session: Session, client_order_id: str) -> list[FillRow]:
    return list(session.exec(select(FillRow).where(FillRow.client_order_id == client_order_id)))


_FINISHED_COLUMNS = (
    _D.c.bot_id, _D.c.action, _D.c.order_status, _D.c.final_at, _D.c.realized_pnl,
)  # fmt: skip
_FINISHED_COUNTED = (
    _D.c.mode == bindparam("mode"),
    _D.c.approved.is_(True),
    _D.c.final.is_(True),
    _D.c.breaker_counted.is_(True),
)
_MINE = _D.c.bot_id == bindparam("bot_id")
_BOTS_FINISHED = select(*_FINISHED_COLUMNS).where(_MINE, *_FINISHED_COUNTED).order_by(_D.c.final_at)
_ALL_FINISHED = (
    select(*_FINISHED_COLUMNS)
    .where(or_(_MINE, _D.c.final_at > bindparam("since")), *_FINISHED_COUNTED)
    .order_by(_D.c.final_at)
)


def breaker_facts(
    session: Session, mode: str, bot_id: str, *, all_bots_since: datetime | None
) -> dict[str | None, tuple[list[ExitResult], list[datetime]]]:
    """Finished exits (oldest first) and failed orders counted since the last reset, of the bot
    and (key ``None``) of every bot finished after ``all_bots_since`` (``None``: the all-bots
    breaker is off, and only the bot's are read), from one query of the columns they need: the
    breakers read them after every final order, and loading every finished decision of every
    bot, as a whole row and twice, was most of safety's cost of an order event."""
    params: dict[str, object] = {"mode": mode, "bot_id": bot_id, "since": all_bots_since}
    statement = _BOTS_FINISHED if all_bots_since is None else _ALL_FINISHED
    rows = session.connection().execute(statement, params).all()
    found: dict[str | None, tuple[list[ExitResult], list[datetime]]] = {
        None: ([], []),
        bot_id: ([], []),
    }
    for bot, action, status, final_at, realized_pnl in rows:
        if final_at is None:
            continue
        for key in {None, bot_id} if bot == bot_id else (None,):
            exits, failures = found[key]
            if action == "exit" and realized_pnl is not None:
                exits.append(ExitResult(final_at, realized_pnl))
            if status == "failed":
                failures.append(final_at)
    return found


def apply_trips(
    session: Session,
    trips: list[Trip],
    rows: dict[str, TradingStateRow],
    cause: str,
    now: datetime,
) -> list[SafetyEvent]:
    """Move each tripped scope to the trip's state unless it is already as strict."""
    news = []
    for trip in trips:
        row = rows[trip.bot_id or SYSTEM]
        if stricter(row.state, trip.state) == row.state:
            continue
        news.append(
            set_state(
                session,
                row,
                trip.state,
                code=trip.code,
                message=trip.message,
                caused_by=f"breaker {trip.code} on {cause}",
                resets_at=trip.resets_at,
                event_id=f"safety-trip-{trip.code}-{trip.bot_id or SYSTEM}-{cause}",
                time=now,
            )
        )
    return news


def reset_counters(session: Session, bot_id: str, mode: str) -> int:
    """``tranche limits reset BOT`` (mock only): the bot's decisions stop counting for limits and
    cooldowns. Returns how many decisions were released."""
    result = session.execute(
        update(DecisionRow)
        .where(
            col(DecisionRow.bot_id) == bot_id,
            col(DecisionRow.mode) == mode,
            col(DecisionRow.counted).is_(True),
        )
        .values(counted=False)
    )
    return result.rowcount or 0
