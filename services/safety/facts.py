"""The facts a safety decision and a readiness pass look at, read from safety's tables
(:mod:`services.safety.store`).

A decision reads them for its bot inside its locked transaction; a readiness pass reads them for
every bot it assesses, without locks. Both go through :func:`bot_facts`, whose every statement
answers for however many bots it is asked about: a pass read six statements per bot before, and
the ORM's cost per statement (building, caching and running it), not the database's work, was
the largest part of safety's CPU per order (``python -m services.safety.bench --cycle``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BindParameter, Select, bindparam, case, func, select
from sqlmodel import Session, col
from sqlmodel import select as orm_select

from services.safety.breakers import stricter
from services.safety.rules import DAY, FLAT, HOUR, BotState, Counters, Market, Position
from services.safety.store import (
    SYSTEM,
    UNKNOWN_AT_EXCHANGE,
    ZERO,
    DecisionRow,
    FillRow,
    PositionRow,
    TradingStateRow,
)
from shared.contracts import Mode
from shared.stops import STOP_INTENT_PREFIX

# Every read of a decision is a prebuilt Core statement run on the session's connection: built,
# compiled and cached once, and its rows are plain tuples. Built and run through the ORM each
# time, a statement cost five times the CPU (86 against 16 us for a one-row select on SQLite),
# and a decision reads about ten. They flush nothing: the decision reads before it writes.
D = DecisionRow.__table__.c
P = PositionRow.__table__.c
F = FillRow.__table__.c
S = TradingStateRow.__table__.c
BOTS: BindParameter[list[str]] = bindparam("bots", expanding=True)
MODE: BindParameter[str] = bindparam("mode")
NOT_A_STOP = D.intent_id.not_like(f"{STOP_INTENT_PREFIX}%")
"""A stop resting on the exchange is no order in flight and no exit that starts a cooldown."""


def _run(session: Session, statement: Select, **params: object) -> list:
    return list(session.connection().execute(statement, params).all())


Approval = tuple[datetime, datetime | None]
"""The newest counted approval of a kind: its event time and its order's last fill time."""
HeldRow = tuple[int, Decimal, int, Decimal | None, Decimal]
"""A stored position: sequence, quantity, tranches, last entry price, cost basis."""


_DECIDED = select(D.intent_id).where(D.intent_id == bindparam("intent_id"))


def decision_exists(session: Session, intent_id: str) -> bool:
    return bool(_run(session, _DECIDED, intent_id=intent_id))


# -- what a decision reads about its own bot ---------------------------------------------------


@dataclass(frozen=True)
class BotFacts:
    """What a decision reads about one bot, besides its trading state and the fleet's facts."""

    last_entry: Approval | None = None
    last_exit: Approval | None = None
    production_entries: int = 0
    """Approved production entries and adds that did not fail (the production ramp)."""
    held: HeldRow | None = None
    """The ledger's newest position as safety stored it (``None``: none stored)."""
    fills: int = 0
    """Fills safety recorded for the bot in this mode (to tell whether ``held`` is behind)."""


NO_FACTS = BotFacts()


_IS_EXIT = D.action == "exit"
_RANKED = (
    select(
        D.bot_id,
        _IS_EXIT.label("is_exit"),
        D.market_time,
        D.last_fill_at,
        func.row_number()
        .over(partition_by=(D.bot_id, _IS_EXIT), order_by=D.market_time.desc())
        .label("newest"),
    )
    .where(
        D.bot_id.in_(BOTS),
        D.mode == MODE,
        D.approved.is_(True),
        D.counted.is_(True),
        D.action.in_(("entry", "add", "exit")),
        NOT_A_STOP,
    )
    .subquery()
)
_LATEST_APPROVALS = select(
    _RANKED.c.bot_id, _RANKED.c.is_exit, _RANKED.c.market_time, _RANKED.c.last_fill_at
).where(_RANKED.c.newest == 1)
"""Each bot's newest counted approval of an entry or add and of an exit: one window query for
every bot (two statements per bot before)."""

_PRODUCTION_ENTRIES = (
    select(D.bot_id, func.count())
    .where(
        D.bot_id.in_(BOTS),
        D.mode == "production",
        D.approved.is_(True),
        D.action.in_(("entry", "add")),
        D.order_status != "failed",
    )
    .group_by(D.bot_id)
)
_HELD = select(
    P.bot_id, P.sequence, P.quantity, P.tranches, P.last_entry_price, P.cost_basis
).where(P.bot_id.in_(BOTS), P.mode == MODE)
_FILL_COUNTS = (
    select(F.bot_id, func.count()).where(F.bot_id.in_(BOTS), F.mode == MODE).group_by(F.bot_id)
)


def _held(session: Session, mode: str, bot_ids: Collection[str]) -> dict[str, HeldRow]:
    rows = _run(session, _HELD, bots=list(bot_ids), mode=mode)
    return {bot: tuple(rest) for bot, *rest in rows}


def _fill_counts(session: Session, mode: str, bot_ids: Collection[str]) -> dict[str, int]:
    return dict(_run(session, _FILL_COUNTS, bots=list(bot_ids), mode=mode))


def bot_facts(session: Session, mode: str, bot_ids: Collection[str]) -> dict[str, BotFacts]:
    """:class:`BotFacts` of each of ``bot_ids`` in ``mode``: four statements whatever the
    number of bots (a bot with nothing stored is :data:`NO_FACTS`)."""
    bots = list(bot_ids)
    approvals = {
        (bot, bool(exiting)): (at, fill)
        for bot, exiting, at, fill in _run(session, _LATEST_APPROVALS, bots=bots, mode=mode)
    }
    production = dict(_run(session, _PRODUCTION_ENTRIES, bots=bots))
    held = _held(session, mode, bot_ids)
    fills = _fill_counts(session, mode, bot_ids)
    return {
        bot: BotFacts(
            last_entry=approvals.get((bot, False)),
            last_exit=approvals.get((bot, True)),
            production_entries=production.get(bot, 0),
            held=held.get(bot),
            fills=fills.get(bot, 0),
        )
        for bot in bot_ids
    }


def known_position(held: HeldRow | None, fills: int) -> Position | None:
    """The ledger's position, or ``None`` when it is unknown: it reflects fewer fills than safety
    has seen (the ledger is behind), or none is stored though the bot has fills."""
    if held is None:
        return FLAT if fills == 0 else None
    sequence, quantity, tranches, last_entry_price, cost_basis = held
    if sequence < fills:
        return None
    return Position(
        quantity=quantity, tranches=tranches, last_entry_price=last_entry_price,
        cost_basis=cost_basis,
    )  # fmt: skip


def counted_from(approval: Approval | None, now: datetime) -> datetime | None:
    """When a cooldown counts from: the later of the approval and its last fill (a slow fill and
    a new entry must not overlap), but only a fill time on the clock of ``now``: one after ``now``
    is another clock (a mock fill at the wall clock during a replay years back), never a later
    start."""
    if approval is None:
        return None
    market_time, fill = approval
    return max(market_time, fill) if fill is not None and fill <= now else market_time


_SYSTEM_MODE = select(S.mode).where(S.scope == SYSTEM)


def ledger_behind(session: Session, bot_id: str, start_mode: Mode) -> bool:
    """Whether the bot's latest position reflects fewer fills than safety has recorded: the
    ledger is still booking them (what makes the position unknown once the bucket is read). Read
    without locks, to decide whether to wait before deciding."""
    chosen = _run(session, _SYSTEM_MODE)
    mode = (chosen[0][0] if chosen else None) or start_mode  # as current_mode() says
    held = _held(session, mode, [bot_id]).get(bot_id)
    return known_position(held, _fill_counts(session, mode, [bot_id]).get(bot_id, 0)) is None


def peek_states(session: Session, bot_ids: Collection[str]) -> dict[str, TradingStateRow]:
    """The system's (key ``*``) and each bot's trading state for a read: no lock, one statement,
    a missing row is active."""
    scopes = [SYSTEM, *bot_ids]
    rows = session.exec(
        orm_select(TradingStateRow).where(col(TradingStateRow.scope).in_(scopes))
    ).all()
    found = {row.scope: row for row in rows}
    return {scope: found.get(scope) or TradingStateRow(scope=scope) for scope in scopes}


# -- what a decision reads about every bot ------------------------------------------------------


_COUNTED_ENTRIES = (
    D.mode == MODE,
    D.approved.is_(True),
    D.counted.is_(True),
    D.action.in_(("entry", "add")),
    D.market_time > bindparam("since"),
)
_ENTRIES = select(D.bot_id, D.market_time, D.notional).where(*_COUNTED_ENTRIES)
"""Approved, counted entries and adds of every bot since ``since``: (bot, time, notional). One
query for all four counters; summed in Python, because SQLite keeps exact decimals as text and
would sum them as floats."""
_ENTRIES_COUNTED = select(
    func.count(), func.coalesce(func.sum(case((D.market_time > bindparam("hour"), 1), else_=0)), 0)
).where(*_COUNTED_ENTRIES)
"""Every bot's entries in the day and in the hour before a decision, counted by the database: a
decision needs the counts only, and reading every bot's entries of the day to count them grew
with the bots (the square of the bots for a round of signals)."""
_BOTS_ENTRIES = _ENTRIES.where(D.bot_id == bindparam("bot_id"))
_IN_FLIGHT = select(D.bot_id, D.action, D.mode, D.client_order_id, D.order_status).where(
    D.approved.is_(True), D.final.is_(False), NOT_A_STOP
)
_OPEN_BOTS = select(P.bot_id).where(P.mode == MODE, P.is_open.is_(True))


@dataclass(frozen=True)
class Fleet:
    """What a decision reads about every bot of one mode: approved entries after ``since``
    (bot, event time, notional), orders in flight, bots with an open position. The same for every
    bot a readiness pass assesses, so read once per pass (:func:`gather_state`'s ``fleets``)
    rather than once per bot, which made a pass grow with the square of the bots."""

    mode: str
    since: datetime
    entries: list[tuple[str, datetime, Decimal]]
    in_flight: list[tuple[str, str, str, str | None, str]]
    """(bot, action, mode, client order id, order status) of every approval not final."""
    open_bots: frozenset[str]
    counted: tuple[int, int] | None = None
    """Every bot's entries (in the hour, in the day) before one decision, when ``entries`` holds
    that decision's bot's only (:func:`decision_fleet`); ``None``: ``entries`` holds them all."""


def _in_flight_and_open(session: Session, mode: str) -> tuple[list, frozenset[str]]:
    in_flight = [tuple(row) for row in _run(session, _IN_FLIGHT)]
    open_bots = {bot for (bot,) in _run(session, _OPEN_BOTS, mode=mode)}
    open_bots |= {b for b, action, m, _, _ in in_flight if m == mode and action != "exit"}
    return in_flight, frozenset(open_bots)


def fleet_facts(session: Session, mode: str, since: datetime) -> Fleet:
    in_flight, open_bots = _in_flight_and_open(session, mode)
    entries = [tuple(row) for row in _run(session, _ENTRIES, mode=mode, since=since)]
    return Fleet(mode, since, entries, in_flight, open_bots)


def decision_fleet(session: Session, mode: str, bot_id: str, now: datetime) -> Fleet:
    """The fleet's facts for one decision at ``now``: every bot's entries counted, the bot's
    own read (its notional of the day is summed in Python, exact)."""
    day = now - DAY
    in_flight, open_bots = _in_flight_and_open(session, mode)
    entries = [
        tuple(row) for row in _run(session, _BOTS_ENTRIES, mode=mode, since=day, bot_id=bot_id)
    ]
    ((in_day, in_hour),) = _run(session, _ENTRIES_COUNTED, mode=mode, since=day, hour=now - HOUR)
    return Fleet(mode, day, entries, in_flight, open_bots, counted=(int(in_hour), int(in_day)))


def _fleet(session: Session, mode: str, since: datetime, fleets: dict[str, Fleet]) -> Fleet:
    """The facts since ``since``: from ``fleets`` if it holds them (a reading since earlier
    holds them all), else read (and kept there)."""
    known = fleets.get(mode)
    if known is None or known.since > since:
        known = fleets[mode] = fleet_facts(session, mode, since)
    return known


def gather_state(
    session: Session,
    *,
    bot_id: str,
    mode: Mode,
    system: TradingStateRow,
    bot: TradingStateRow,
    now: datetime,
    positions_synced: bool,
    market: Market | None,
    received_at: datetime | None,
    fleets: dict[str, Fleet] | None = None,
    facts: BotFacts | None = None,
) -> BotState:
    """Everything ``decide`` looks at, read inside the decision's locked transaction (or, for
    readiness, without locks: then ``fleets`` shares the all-bots facts between the bots of one
    pass, and ``facts`` are the bot's, read with every other bot's by :func:`bot_facts`)."""
    if facts is None:
        facts = bot_facts(session, mode, [bot_id])[bot_id]
    hour, day = now - HOUR, now - DAY
    if fleets is None:
        fleet = decision_fleet(session, mode, bot_id, now)
    else:
        fleet = _fleet(session, mode, day, fleets)
    all_day = [row for row in fleet.entries if row[1] > day]
    all_hour = [row for row in all_day if row[1] > hour]
    bot_day = [row for row in all_day if row[0] == bot_id]
    in_flight, open_bots = fleet.in_flight, fleet.open_bots
    all_entries_hour, all_entries_day = fleet.counted or (len(all_hour), len(all_day))
    counters = Counters(
        bot_entries_hour=sum(1 for row in all_hour if row[0] == bot_id),
        bot_entries_day=len(bot_day),
        all_entries_hour=all_entries_hour,
        all_entries_day=all_entries_day,
        bot_notional_day=sum((row[2] for row in bot_day), ZERO),
        open_positions=len(open_bots),
    )
    state = stricter(system.state, bot.state)
    why = next((f"{r.message} ({r.caused_by})" for r in (system, bot) if r.state == state), "")
    mine = [(action, order, status) for b, action, _, order, status in in_flight if b == bot_id]
    return BotState(
        mode=mode,
        trading_state=state,
        trading_reason=why,
        last_entry_at=counted_from(facts.last_entry, now),
        last_exit_at=counted_from(facts.last_exit, now),
        orders_in_flight=len(mine),
        entries_in_flight=sum(1 for action, _, _ in mine if action != "exit"),
        unknown_at_exchange=tuple(
            sorted(order for _, order, status in mine if order and status == UNKNOWN_AT_EXCHANGE)
        ),
        position=known_position(facts.held, facts.fills) if positions_synced else None,
        counters=counters,
        production_entries=facts.production_entries,
        market=market,
        received_at=received_at,
    )
