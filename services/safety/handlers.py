"""The two state changes safety makes for a message, each run in one locked transaction:
deciding an intent, and recording an order event (with the breakers it may trip). I/O is the
session only; ``app.py`` wires them to NATS."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from services.safety.breakers import all_bots_trips, bot_trips
from services.safety.config import SafetySettings
from services.safety.facts import (
    NO_FACTS,
    BotFacts,
    Fleet,
    bot_facts,
    decision_exists,
    gather_state,
    peek_states,
)
from services.safety.readiness import BotClock, assess
from services.safety.rules import DAY, BotState, Market, client_order_id_for, decide, decision_time
from services.safety.store import (
    SYSTEM,
    TradingStateRow,
    apply_order_event,
    apply_trips,
    book_realized,
    breaker_facts,
    current_mode,
    lock_scopes,
    note_realized,
    reset_due_breakers,
    safety_event,
    save_decision,
    save_position,
)
from shared import subjects
from shared.contracts import (
    BotReadiness,
    OrderApproved,
    OrderEvent,
    OrderRejected,
    PositionUpdate,
    SafetyEvent,
    TradeIntent,
    TrancheCapBreach,
)
from shared.money import utc_now
from shared.outbox import stage

# Rejections that mean a limit or breaker stopped a trade: each is a tranche.safety.events message.
NEWSWORTHY = frozenset(
    {
        "BOT_ENTRIES_PER_HOUR", "BOT_ENTRIES_PER_DAY", "ALL_ENTRIES_PER_HOUR",
        "ALL_ENTRIES_PER_DAY", "BOT_NOTIONAL_PER_DAY", "OPEN_POSITIONS", "POSITION_NOTIONAL",
        "TRANCHE_CAP", "PRODUCTION_RAMP", "STALE_MARKET_DATA", "PRICE_BAND", "INTENT_EXPIRED",
    }
)  # fmt: skip


def live_checks(settings: SafetySettings, mode: str) -> bool:
    """Whether the live market-data checks run for a decision in ``mode``."""
    return settings.live_checks == "on" or (
        settings.live_checks == "production" and mode == "production"
    )


def state_of(
    session: Session,
    bot_id: str,
    scopes: tuple[TradingStateRow, TradingStateRow],
    now: datetime,
    settings: SafetySettings,
    market: Market | None,
    *,
    positions_synced: bool,
    arrived_now: bool = False,
    fleets: dict[str, Fleet] | None = None,
    facts: BotFacts | None = None,
) -> BotState:
    """The facts ``decide`` looks at, in the mode approvals are made in now. Live checks compare
    with prices as they arrive and (``arrived_now``) the wall clock: meaningful for live data,
    but a replay at full speed runs its ticks ahead of its intents, and the same replay must
    decide the same way twice."""
    system, bot = scopes
    mode = current_mode(system, settings.mode)
    live = live_checks(settings, mode)
    return gather_state(
        session,
        bot_id=bot_id,
        mode=mode,
        system=system,
        bot=bot,
        now=now,
        positions_synced=positions_synced,
        market=market if live else None,
        received_at=utc_now() if live and arrived_now else None,
        fleets=fleets,
        facts=facts,
    )


def decide_and_store(
    session: Session,
    body: TradeIntent,
    settings: SafetySettings,
    *,
    positions_synced: bool,
    markets: dict[str, Market],
) -> OrderApproved | OrderRejected | None:
    """Decide one intent and store the decision with its message, in the caller's transaction:
    lock, check for an earlier decision (a redelivery gets ``None``: nothing new), reset breakers
    that are due, gather the facts, decide, stage. ``markets`` is the newest price per product."""
    system, bot = lock_scopes(session, body.bot_id)
    if decision_exists(session, body.intent_id):
        return None  # a redelivery: the decision and its message are already stored
    now = decision_time(body)
    reset_due_breakers(session, [system] if bot is system else [system, bot], now)
    state = state_of(
        session,
        body.bot_id,
        (system, bot),
        now,
        settings,
        markets.get(body.product_id),
        positions_synced=positions_synced,
        arrived_now=True,
    )
    mode = state.mode
    decision = decide(body, state, settings.limits_for(body.bot_id), now)
    common = {
        "message_id": f"decision-{body.intent_id}",
        "correlation_id": body.intent_id,
        "time": now,
        "mode": mode,
        "decided_at": utc_now(),
        "counters": decision.counters.as_strings(),
    }
    message: OrderApproved | OrderRejected
    if decision.approved:
        message = OrderApproved(
            intent=decision.intent,
            client_order_id=client_order_id_for(body.intent_id),
            adjustments=list(decision.adjustments),
            **common,
        )
    else:
        message = OrderRejected(intent=body, reasons=list(decision.reasons), **common)
        stopped = [r for r in decision.reasons if r.code in NEWSWORTHY]
        if stopped:
            stage(
                session,
                subjects.SAFETY_EVENTS,
                safety_event(
                    code="LIMIT_REACHED",
                    message="; ".join(r.message for r in stopped),
                    bot_id=body.bot_id,
                    state=None,
                    caused_by=",".join(r.code for r in stopped),
                    message_id=f"safety-limit-{body.intent_id}",
                    time=now,
                ),
            )
    save_decision(session, message, decision, state.position)
    return message


def record_order_event(
    session: Session, body: OrderEvent, settings: SafetySettings
) -> list[SafetyEvent]:
    """Record an order event; when it makes the order final, check the breakers (a failed
    order counts at once; an exit's realized P&L comes with the ledger's position, see
    :func:`record_position`). Returns the trips it caused (each already staged as an event)."""
    system, bot = lock_scopes(session, body.bot_id)
    if not apply_order_event(session, body):
        return []
    return _check_breakers(session, body.mode, body.bot_id, system, bot, body.client_order_id,
                           body.time, settings)  # fmt: skip


def record_position(
    session: Session, position: PositionUpdate, settings: SafetySettings
) -> list[SafetyEvent]:
    """Keep the ledger's newest position; what its realized P&L moved since the last one is the
    realized P&L of the bot's latest exit (one source: the ledger's books, FIFO or pro rata,
    dust and adjustments included). Once that exit's order is final the breakers judge it."""
    system, bot = lock_scopes(session, position.bot_id)
    if not save_position(session, position):
        return []
    change = note_realized(session, position)
    if not change:
        return []
    exit_ = book_realized(session, position.bot_id, position.mode, change)
    if exit_ is None or not exit_.final:
        return []
    return _check_breakers(session, position.mode, position.bot_id, system, bot,
                           exit_.client_order_id or position.message_id, position.time,
                           settings)  # fmt: skip


def _check_breakers(
    session: Session, mode: str, bot_id: str, system: TradingStateRow, bot: TradingStateRow,
    cause: str, now: datetime, settings: SafetySettings,
) -> list[SafetyEvent]:  # fmt: skip
    every_bot = settings.breakers_for(None)
    # Every bot's facts only for the all-bots breaker (off by default), and only its last day.
    watching_all = every_bot.daily_loss_all_bots is not None
    facts = breaker_facts(session, mode, bot_id, all_bots_since=now - DAY if watching_all else None)
    exits, failures = facts[bot_id]
    trips = bot_trips(bot_id, exits, failures, settings.breakers_for(bot_id), now)
    if watching_all:
        trips += all_bots_trips(facts[None][0], every_bot, now)
    return apply_trips(session, trips, {SYSTEM: system, bot_id: bot}, cause, now)


def readiness_of(
    session: Session,
    bot_ids: set[str],
    clocks: dict[str, BotClock],
    settings: SafetySettings,
    *,
    positions_synced: bool,
    markets: dict[str, Market],
) -> list[BotReadiness]:
    """Each bot's readiness at its own event time, read without locks (it changes nothing); a
    bot safety has no time for yet is left out. The facts about all bots are read once for the
    pass (earliest event time first, so the first reading covers every later bot's day), and
    each bot's own facts and trading state for every bot of the pass at once."""
    timed = []
    for bot_id in bot_ids:
        clock = clocks.get(bot_id, BotClock())
        market = markets.get(clock.product_id) if clock.product_id else None
        now = clock.now(market.time if market else None)
        if now is not None:
            timed.append((now, bot_id, clock, market))
    if not timed:
        return []
    fleets: dict[str, Fleet] = {}
    states = peek_states(session, [bot_id for _, bot_id, _, _ in timed])
    system = states[SYSTEM]
    facts = bot_facts(session, current_mode(system, settings.mode), states.keys() - {SYSTEM})
    found = []
    for now, bot_id, clock, market in sorted(timed, key=lambda item: item[:2]):
        state = state_of(
            session, bot_id, (system, states[bot_id]), now, settings, market,
            positions_synced=positions_synced, fleets=fleets, facts=facts.get(bot_id, NO_FACTS),
        )  # fmt: skip
        limits = settings.limits_for(bot_id)
        price = market.price if market else None
        found.append(assess(bot_id, clock.product_id, state, limits, now, price))
    return sorted(found, key=lambda readiness: readiness.bot_id)


def report_breach(session: Session, breach: TrancheCapBreach) -> SafetyEvent:
    """Stage safety's own ``TRANCHE_CAP_BREACHED`` event for the ledger's breach report (the
    ledger may not publish safety events). Its id derives from the report's, so a redelivered
    report is staged once."""
    event = safety_event(
        code="TRANCHE_CAP_BREACHED",
        message=breach.message,
        bot_id=breach.bot_id,
        state=None,
        caused_by=f"ledger (position {breach.position_number}, {breach.mode} mode)",
        message_id=f"safety-{breach.message_id}",
        time=breach.time,
    )
    stage(session, subjects.SAFETY_EVENTS, event)
    return event
