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

from sqlalchemy import func
from sqlmodel import Session, col, select

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
    current_mode,
)
from shared.contracts import Mode
from shared.stops import STOP_INTENT_PREFIX

Approval = tuple[datetime, datetime | None]
"""The newest counted approval of a kind: its event time and its order's last fill time."""
HeldRow = tuple[int, Decimal, int, Decimal | None, Decimal]
"""A stored position: sequence, quantity, tranches, last entry price, cost basis."""


def decision_exists(session: Session, intent_id: str) -> bool:
    return session.get(DecisionRow, intent_id) is not None


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


def _in(column, bot_ids: Collection[str]):
    return col(column).in_(list(bot_ids))


def _latest_approvals(
    session: Session, mode: str, bot_ids: Collection[str]
) -> dict[tuple[str, bool], Approval]:
    """Each bot's newest counted approval of an entry or add (key ``(bot, False)``) and of an
    exit (``(bot, True)``), one window query for every bot: two per bot before. A resting
    protective stop is no exit that starts the cooldown."""
    is_exit = col(DecisionRow.action) == "exit"
    ranked = (
        select(
            DecisionRow.bot_id,
            is_exit.label("is_exit"),
            DecisionRow.market_time,
            DecisionRow.last_fill_at,
            func.row_number()
            .over(
                partition_by=(DecisionRow.bot_id, is_exit),
                order_by=col(DecisionRow.market_time).desc(),
            )
            .label("newest"),
        )
        .where(
            _in(DecisionRow.bot_id, bot_ids),
            DecisionRow.mode == mode,
            col(DecisionRow.approved).is_(True),
            col(DecisionRow.counted).is_(True),
            col(DecisionRow.action).in_(("entry", "add", "exit")),
            col(DecisionRow.intent_id).not_like(f"{STOP_INTENT_PREFIX}%"),
        )
        .subquery()
    )
    rows = session.exec(
        select(ranked.c.bot_id, ranked.c.is_exit, ranked.c.market_time, ranked.c.last_fill_at)
        .where(ranked.c.newest == 1)
    ).all()  # fmt: skip
    return {(bot, bool(exiting)): (at, fill) for bot, exiting, at, fill in rows}


def _production_entries(session: Session, bot_ids: Collection[str]) -> dict[str, int]:
    rows = session.exec(
        select(DecisionRow.bot_id, func.count())
        .where(
            _in(DecisionRow.bot_id, bot_ids),
            DecisionRow.mode == "production",
            col(DecisionRow.approved).is_(True),
            col(DecisionRow.action).in_(("entry", "add")),
            DecisionRow.order_status != "failed",
        )
        .group_by(DecisionRow.bot_id)
    ).all()
    return dict(rows)


def _held(session: Session, mode: str, bot_ids: Collection[str]) -> dict[str, HeldRow]:
    rows = session.exec(
        select(
            PositionRow.bot_id, PositionRow.sequence, PositionRow.quantity, PositionRow.tranches,
            PositionRow.last_entry_price, PositionRow.cost_basis,
        ).where(_in(PositionRow.bot_id, bot_ids), PositionRow.mode == mode)
    ).all()  # fmt: skip
    return {bot: tuple(rest) for bot, *rest in rows}


def _fill_counts(session: Session, mode: str, bot_ids: Collection[str]) -> dict[str, int]:
    rows = session.exec(
        select(FillRow.bot_id, func.count())
        .where(_in(FillRow.bot_id, bot_ids), FillRow.mode == mode)
        .group_by(FillRow.bot_id)
    ).all()
    return dict(rows)


def bot_facts(session: Session, mode: str, bot_ids: Collection[str]) -> dict[str, BotFacts]:
    """:class:`BotFacts` of each of ``bot_ids`` in ``mode``: four statements whatever the
    number of bots (a bot with nothing stored is :data:`NO_FACTS`)."""
    approvals = _latest_approvals(session, mode, bot_ids)
    production = _production_entries(session, bot_ids)
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


def ledger_behind(session: Session, bot_id: str, start_mode: Mode) -> bool:
    """Whether the bot's latest position reflects fewer fills than safety has recorded: the
    ledger is still booking them (what makes the position unknown once the bucket is read). Read
    without locks, to decide whether to wait before deciding."""
    system = session.get(TradingStateRow, SYSTEM)
    mode = current_mode(system, start_mode) if system is not None else start_mode
    held = _held(session, mode, [bot_id]).get(bot_id)
    return known_position(held, _fill_counts(session, mode, [bot_id]).get(bot_id, 0)) is None


def peek_states(session: Session, bot_ids: Collection[str]) -> dict[str, TradingStateRow]:
    """The system's (key ``*``) and each bot's trading state for a read: no lock, one statement,
    a missing row is active."""
    scopes = [SYSTEM, *bot_ids]
    rows = session.exec(select(TradingStateRow).where(_in(TradingStateRow.scope, scopes))).all()
    found = {row.scope: row for row in rows}
    return {scope: found.get(scope) or TradingStateRow(scope=scope) for scope in scopes}


# -- what a decision reads about every bot ------------------------------------------------------


def _entries(session: Session, mode: str, since: datetime):
    """Approved, counted entries and adds of every bot since ``since``: (bot, time, notional).
    One query for all four counters; summed in Python, because SQLite keeps exact decimals as
    text and would sum them as floats."""
    return session.exec(
        select(DecisionRow.bot_id, DecisionRow.market_time, DecisionRow.notional).where(
            DecisionRow.mode == mode,
            col(DecisionRow.approved).is_(True),
            col(DecisionRow.counted).is_(True),
            col(DecisionRow.action).in_(("entry", "add")),
            DecisionRow.market_time > since,
        )
    ).all()


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


def fleet_facts(session: Session, mode: str, since: datetime) -> Fleet:
    in_flight = session.exec(
        select(
            DecisionRow.bot_id, DecisionRow.action, DecisionRow.mode,
            DecisionRow.client_order_id, DecisionRow.order_status,
        ).where(
            col(DecisionRow.approved).is_(True), col(DecisionRow.final).is_(False),
            # a stop resting on the exchange is no order in flight (shared/stops.py)
            col(DecisionRow.intent_id).not_like(f"{STOP_INTENT_PREFIX}%"),
        )
    ).all()  # fmt: skip
    open_bots = set(
        session.exec(
            select(PositionRow.bot_id).where(
                PositionRow.mode == mode, col(PositionRow.is_open).is_(True)
            )
        ).all()
    )
    open_bots |= {b for b, action, m, _, _ in in_flight if m == mode and action != "exit"}
    return Fleet(
        mode=mode,
        since=since,
        entries=[tuple(row) for row in _entries(session, mode, since)],
        in_flight=[tuple(row) for row in in_flight],
        open_bots=frozenset(open_bots),
    )


def _fleet(session: Session, mode: str, since: datetime, fleets: dict[str, Fleet] | None) -> Fleet:
    """The facts since ``since``: from ``fleets`` if it holds them (a reading since earlier
    holds them all), else read (and kept there)."""
    known = fleets.get(mode) if fleets is not None else None
    if known is None or known.since > since:
        known = fleet_facts(session, mode, since)
        if fleets is not None:
            fleets[mode] = known
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
    fleet = _fleet(session, mode, day, fleets)
    all_day = [row for row in fleet.entries if row[1] > day]
    all_hour = [row for row in all_day if row[1] > hour]
    bot_day = [row for row in all_day if row[0] == bot_id]
    in_flight, open_bots = fleet.in_flight, fleet.open_bots
    counters = Counters(
        bot_entries_hour=sum(1 for row in all_hour if row[0] == bot_id),
        bot_entries_day=len(bot_day),
        all_entries_hour=len(all_hour),
        all_entries_day=len(all_day),
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
