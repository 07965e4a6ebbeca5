"""The safety decision (pure): ``decide(intent, state, limits, now) -> Decision``.

No broker, database or clock in here: the store gathers the facts into a :class:`BotState`
(counters derived from stored decisions, fills and positions), ``now`` is event time (the intent's
market time, :func:`decision_time`), and every rule that fails adds a :class:`Reason` with a stable
code. An intent is approved only when no rule objects, so a rejection names *every* reason.

Entry-only rules (marked ``entry only`` in :data:`RULES`) never block an exit: an exit lowers
risk. Counted limits count entries and adds only, so an exit never uses one up either.

Units: notional and money are quote currency (what ``quote_size`` is in), sizes base currency,
percentages are percent (``5`` = 5 %), windows are rolling in event time (hour = 60 min,
day = 24 h).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from services.safety.rulebook import ENTRIES, RULEBOOK, Facts, Kind, rules_for
from shared.contracts import Mode, Reason, TradeIntent, TradingState
from shared.exits import exit_kind, sells_everything

ORDER_NAMESPACE = uuid.UUID("0b8e9a3c-1f5e-4a3e-8c2d-7d6b5a4c3e21")
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
ZERO = Decimal(0)


def client_order_id_for(intent_id: str) -> str:
    """Deterministic: one intent can only ever name one exchange order."""
    return str(uuid.uuid5(ORDER_NAMESPACE, intent_id))


def decision_time(intent: TradeIntent) -> datetime:
    """Event time: the market time the intent was made at (its own time without a price)."""
    return intent.market_time or intent.time


@dataclass(frozen=True)
class Limits:
    """One bot's limits (the global defaults with the bot's overrides). ``None`` = no limit."""

    entry_cooldown: timedelta = timedelta(minutes=5)
    exit_cooldown: timedelta = timedelta(minutes=1)
    max_entries_per_bot_hour: int | None = 6
    max_entries_per_bot_day: int | None = 24
    max_entries_all_hour: int | None = 60
    max_entries_all_day: int | None = 400
    max_notional_per_bot_day: Decimal | None = None
    max_open_positions: int | None = None
    max_position_notional: Decimal | None = None
    max_order_notional: Decimal | None = None
    min_order_notional: Decimal | None = None
    max_tranches: int = 3
    add_step_pct: Decimal = ZERO
    """An add needs the price at least this many percent below the last entry (0 = off)."""
    ramp_trades: int = 3
    ramp_max_notional: Decimal | None = None
    """A bot's first ``ramp_trades`` production entries spend at most this (None = no ramp)."""
    max_market_age: timedelta | None = timedelta(seconds=60)
    """Wall-clock age of the price, checked only when the state carries ``received_at``."""
    price_band_pct: Decimal | None = Decimal(5)
    intent_ttl: timedelta | None = timedelta(minutes=5)
    """Event time between the intent's price and the newest price safety has seen."""


@dataclass(frozen=True)
class Counters:
    """What the counted limits had used up before this decision (entries and adds only)."""

    bot_entries_hour: int = 0
    bot_entries_day: int = 0
    all_entries_hour: int = 0
    all_entries_day: int = 0
    bot_notional_day: Decimal = ZERO
    open_positions: int = 0
    """Bots (this mode) holding a position or with an entry on its way, this bot included."""

    def as_strings(self) -> dict[str, str]:
        return {name: str(value) for name, value in self.__dict__.items()}


@dataclass(frozen=True)
class Position:
    """The ledger's position of the bot in this mode (flat: quantity 0, no tranches)."""

    quantity: Decimal = ZERO
    tranches: int = 0
    last_entry_price: Decimal | None = None
    cost_basis: Decimal = ZERO

    @property
    def is_open(self) -> bool:
        return self.quantity > 0


FLAT = Position()


@dataclass(frozen=True)
class Market:
    """The newest price safety has seen for the product."""

    price: Decimal
    time: datetime


@dataclass(frozen=True)
class BotState:
    """Everything ``decide`` may look at, gathered by the store in the decision's transaction."""

    mode: Mode = "mock"
    trading_state: TradingState = "active"
    """The stricter of the system's and the bot's state."""
    trading_reason: str = ""
    last_entry_at: datetime | None = None
    """Later of the last entry's approval (event time) and its last fill."""
    last_exit_at: datetime | None = None
    orders_in_flight: int = 0
    entries_in_flight: int = 0
    unknown_at_exchange: tuple[str, ...] = ()
    """client_order_ids of the bot's orders in flight the exchange has lost (status
    ``unknown_at_exchange``): counted in ``orders_in_flight`` but reported with their own code."""
    position: Position | None = FLAT
    """``None``: unknown or stale (fail closed)."""
    counters: Counters = field(default_factory=Counters)
    production_entries: int = 0
    market: Market | None = None
    received_at: datetime | None = None
    """Wall clock when the intent arrived; given only in production (live data is wall time)."""


@dataclass(frozen=True)
class Decision:
    approved: bool
    reasons: tuple[Reason, ...] = ()
    counters: Counters = field(default_factory=Counters)
    """Seen before the decision."""
    counters_after: Counters = field(default_factory=Counters)
    intent: TradeIntent | None = None
    """What to execute: the intent, an exit cut to the position when it asked for more."""
    notional: Decimal = ZERO
    adjustments: tuple[Reason, ...] = ()


def notional_of(intent: TradeIntent) -> Decimal | None:
    """Quote currency the order moves; ``None`` when a base-sized order has no price. A
    base-sized order is measured at the higher of its reference price and its limit price: a
    limit buy may pay up to its limit, whatever price the intent says it saw."""
    if intent.quote_size is not None:
        return intent.quote_size
    prices = [p for p in (intent.reference_price, intent.limit_price) if p is not None]
    if not prices:
        return None
    assert intent.base_size is not None, "a TradeIntent has exactly one size"
    return intent.base_size * max(prices)


def _sized_exit(intent: TradeIntent, position: Position) -> tuple[TradeIntent, list[Reason]]:
    """No shorting on spot: an exit that asks for more than is held is cut to the position; a
    standing exit (protective, flatten) sells exactly the position, whatever size it was asked
    with (the signal may have sized it from a position that lagged a fill). Returns the intent to
    execute and the adjustments made."""
    size = intent.base_size
    if size is None or not position.is_open:
        return intent, []
    if size > position.quantity:
        note = Reason(
            code="EXIT_CUT_TO_POSITION",
            message=(
                f"the exit asked for {size} but bot {intent.bot_id} holds {position.quantity}: "
                "selling what it holds (no shorting on spot)"
            ),
        )
    elif size < position.quantity and sells_everything(intent):
        note = Reason(
            code="EXIT_SIZED_TO_POSITION",
            message=(
                f"a {intent.reason.code} exit sells the whole position: {position.quantity}, "
                f"not the {size} it was asked with"
            ),
        )
    else:
        return intent, []
    return intent.model_copy(update={"base_size": position.quantity}), [note]


def kind_of(intent: TradeIntent) -> Kind:
    return exit_kind(intent) or "entry"


def decide(intent: TradeIntent, state: BotState, limits: Limits, now: datetime) -> Decision:
    """Approve, or reject with every reason that applies. ``now`` is event time.

    Invariants: a rejection has at least one reason; an approval leaves every counted limit at or
    below its maximum (``counters_after``); an exit is never stopped by an entry-only rule, a
    standing exit (protective, flatten) never by the exit cooldown, and nothing passes a halt.
    """
    entering = intent.action in ("entry", "add")
    known = state.position
    facts = Facts(intent, state, limits, now, notional_of(intent) or ZERO, known)
    reasons = [
        reason
        for rule in rules_for(kind_of(intent))
        if not (rule.needs_position and known is None) and (reason := rule.check(facts)) is not None
    ]
    executed, adjustments = intent, list[Reason]()
    notional = facts.notional
    if not entering and known is not None and not reasons:
        executed, adjustments = _sized_exit(intent, known)
        notional = notional_of(executed) or ZERO
    seen = state.counters
    if reasons:
        return Decision(False, tuple(reasons), seen, seen, None, notional)
    after = seen
    if entering:
        opening = not (known or FLAT).is_open and state.entries_in_flight == 0
        after = replace(
            seen,
            bot_entries_hour=seen.bot_entries_hour + 1,
            bot_entries_day=seen.bot_entries_day + 1,
            all_entries_hour=seen.all_entries_hour + 1,
            all_entries_day=seen.all_entries_day + 1,
            bot_notional_day=seen.bot_notional_day + notional,
            open_positions=seen.open_positions + (1 if opening else 0),
        )
    return Decision(True, (), seen, after, executed, notional, tuple(adjustments))


#: Every rejection code ``decide`` can give, and whether it only ever stops entries and adds.
RULES: dict[str, bool] = {rule.code: rule.stops == ENTRIES for rule in RULEBOOK}
ENTRY_ONLY = frozenset(code for code, entry_only in RULES.items() if entry_only)
