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

from shared.contracts import Mode, Reason, TradeIntent, TradingState

ORDER_NAMESPACE = uuid.UUID("0b8e9a3c-1f5e-4a3e-8c2d-7d6b5a4c3e21")
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
ZERO = Decimal(0)

#: Every rejection code ``decide`` can give, and whether it only ever stops entries and adds.
RULES: dict[str, bool] = {
    "NO_MARKET_DATA": False,
    "HALTED": False,
    "REDUCING": True,
    "POSITION_UNKNOWN": False,
    "ORDER_IN_FLIGHT": False,
    "ENTRY_COOLDOWN": True,
    "EXIT_COOLDOWN": False,
    "INTENT_EXPIRED": False,
    "STALE_MARKET_DATA": True,
    "PRICE_BAND": True,
    "ADD_STEP": True,
    "TRANCHE_CAP": True,
    "NOTHING_TO_SELL": False,
    "BOT_ENTRIES_PER_HOUR": True,
    "BOT_ENTRIES_PER_DAY": True,
    "ALL_ENTRIES_PER_HOUR": True,
    "ALL_ENTRIES_PER_DAY": True,
    "BOT_NOTIONAL_PER_DAY": True,
    "OPEN_POSITIONS": True,
    "POSITION_NOTIONAL": True,
    "ORDER_TOO_LARGE": True,
    "ORDER_TOO_SMALL": True,
    "PRODUCTION_RAMP": True,
}
ENTRY_ONLY = frozenset(code for code, entry_only in RULES.items() if entry_only)


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


def _duration(delta: timedelta) -> str:
    total = int(delta.total_seconds() + 0.999)
    return f"{total // 60}m{total % 60:02d}s" if total >= 60 else f"{total}s"


def _wait(since: datetime, cooldown: timedelta, now: datetime) -> timedelta | None:
    remaining = cooldown - (now - since)  # a difference of times never overflows
    return remaining if remaining > timedelta(0) else None


def notional_of(intent: TradeIntent) -> Decimal | None:
    """Quote currency the order moves; ``None`` when a base-sized order has no price."""
    if intent.quote_size is not None:
        return intent.quote_size
    if intent.reference_price is None:
        return None
    return intent.base_size * intent.reference_price  # type: ignore[operator]


def _entry_reasons(
    intent: TradeIntent, state: BotState, limits: Limits, now: datetime, notional: Decimal
) -> list[Reason]:
    """Rules that only ever stop an entry or an add."""
    bot, reasons = intent.bot_id, []
    c = state.counters
    if state.last_entry_at is not None:
        wait = _wait(state.last_entry_at, limits.entry_cooldown, now)
        if wait:
            reasons.append(
                Reason(
                    code="ENTRY_COOLDOWN",
                    message=(
                        f"bot {bot} entered at {state.last_entry_at:%Y-%m-%d %H:%M:%S}Z; "
                        f"entries are {_duration(limits.entry_cooldown)} apart, "
                        f"{_duration(wait)} to go"
                    ),
                )
            )
    price = intent.reference_price
    if (
        limits.max_market_age is not None
        and state.received_at is not None
        and intent.market_time is not None
        and state.received_at - intent.market_time > limits.max_market_age
    ):
        age = state.received_at - intent.market_time
        reasons.append(
            Reason(
                code="STALE_MARKET_DATA",
                message=(
                    f"the {intent.product_id} price is {_duration(age)} old, more than "
                    f"{_duration(limits.max_market_age)}: no new entries on a stale feed"
                ),
            )
        )
    if limits.price_band_pct is not None and price is not None and state.market is not None:
        moved = abs(state.market.price - price) / price * 100
        if moved > limits.price_band_pct:
            reasons.append(
                Reason(
                    code="PRICE_BAND",
                    message=(
                        f"{intent.product_id} trades at {state.market.price}, {moved:.2f} % from "
                        f"the signal's {price}; the band is {limits.price_band_pct} %"
                    ),
                )
            )
    position = state.position or FLAT
    if intent.action == "add" or position.is_open:
        last = position.last_entry_price
        if limits.add_step_pct > 0 and last is not None and price is not None:
            needed = last * (1 - limits.add_step_pct / 100)
            if price > needed:
                reasons.append(
                    Reason(
                        code="ADD_STEP",
                        message=(
                            f"an add needs the price {limits.add_step_pct} % below the last entry "
                            f"at {last}, at most {needed}; it is {price}"
                        ),
                    )
                )
    tranches = position.tranches + state.entries_in_flight
    if tranches >= limits.max_tranches:
        reasons.append(
            Reason(
                code="TRANCHE_CAP",
                message=(
                    f"bot {bot}'s position already has {tranches} of its "
                    f"{limits.max_tranches} entry tranches; only exits until it closes"
                ),
            )
        )
    counted = [
        (
            "BOT_ENTRIES_PER_HOUR",
            c.bot_entries_hour,
            limits.max_entries_per_bot_hour,
            f"bot {bot} made",
            "in the last hour",
        ),
        (
            "BOT_ENTRIES_PER_DAY",
            c.bot_entries_day,
            limits.max_entries_per_bot_day,
            f"bot {bot} made",
            "in the last 24 hours",
        ),
        (
            "ALL_ENTRIES_PER_HOUR",
            c.all_entries_hour,
            limits.max_entries_all_hour,
            "all bots made",
            "in the last hour",
        ),
        (
            "ALL_ENTRIES_PER_DAY",
            c.all_entries_day,
            limits.max_entries_all_day,
            "all bots made",
            "in the last 24 hours",
        ),
    ]
    for code, used, limit, who, window in counted:
        if limit is not None and used + 1 > limit:
            reasons.append(
                Reason(
                    code=code,
                    message=f"{who} {used} of {limit} allowed entries {window} ({state.mode})",
                )
            )
    if (
        limits.max_notional_per_bot_day is not None
        and c.bot_notional_day + notional > limits.max_notional_per_bot_day
    ):
        reasons.append(
            Reason(
                code="BOT_NOTIONAL_PER_DAY",
                message=(
                    f"bot {bot} spent {c.bot_notional_day} in the last 24 hours; {notional} more "
                    f"passes its {limits.max_notional_per_bot_day} a day"
                ),
            )
        )
    opening = not position.is_open and state.entries_in_flight == 0
    if (
        limits.max_open_positions is not None
        and opening
        and c.open_positions + 1 > limits.max_open_positions
    ):
        reasons.append(
            Reason(
                code="OPEN_POSITIONS",
                message=(
                    f"{c.open_positions} positions are open across all bots, "
                    f"the limit is {limits.max_open_positions}"
                ),
            )
        )
    if limits.max_position_notional is not None and price is not None:
        held = position.quantity * price
        if held + notional > limits.max_position_notional:
            reasons.append(
                Reason(
                    code="POSITION_NOTIONAL",
                    message=(
                        f"bot {bot} holds {held:.8f} at {price}; {notional} more passes its "
                        f"maximum position of {limits.max_position_notional}"
                    ),
                )
            )
    if limits.max_order_notional is not None and notional > limits.max_order_notional:
        reasons.append(
            Reason(
                code="ORDER_TOO_LARGE",
                message=f"an order of {notional} is above the maximum {limits.max_order_notional}",
            )
        )
    if limits.min_order_notional is not None and notional < limits.min_order_notional:
        reasons.append(
            Reason(
                code="ORDER_TOO_SMALL",
                message=f"an order of {notional} is below the minimum {limits.min_order_notional}",
            )
        )
    if (
        state.mode == "production"
        and limits.ramp_max_notional is not None
        and state.production_entries < limits.ramp_trades
        and notional > limits.ramp_max_notional
    ):
        reasons.append(
            Reason(
                code="PRODUCTION_RAMP",
                message=(
                    f"bot {bot} has made {state.production_entries} of its first "
                    f"{limits.ramp_trades} production entries, each capped at "
                    f"{limits.ramp_max_notional}; {notional} is more"
                ),
            )
        )
    return reasons


def _exit(intent: TradeIntent, state: BotState) -> tuple[TradeIntent, list[Reason], list[Reason]]:
    """No shorting on spot: an exit is cut to what the bot holds, or refused when it holds
    nothing. Returns the intent to execute, the reasons against it and the adjustments."""
    position = state.position or FLAT
    if not position.is_open:
        return (
            intent,
            [Reason(code="NOTHING_TO_SELL", message=f"bot {intent.bot_id} holds no position")],
            [],
        )
    size = intent.base_size
    if size is None:
        # A quote-sized exit: what it sells depends on the fill price, so it cannot be cut.
        price = intent.reference_price
        if price is not None and intent.quote_size / price > position.quantity:  # type: ignore[operator]
            return (
                intent,
                [
                    Reason(
                        code="NOTHING_TO_SELL",
                        message=(
                            f"an exit of {intent.quote_size} at {price} sells more than the "
                            f"{position.quantity} bot {intent.bot_id} holds"
                        ),
                    )
                ],
                [],
            )
        return intent, [], []
    if size > position.quantity:
        cut = intent.model_copy(update={"base_size": position.quantity})
        note = Reason(
            code="EXIT_CUT_TO_POSITION",
            message=(
                f"the exit asked for {size} but bot {intent.bot_id} holds {position.quantity}: "
                "selling what it holds (no shorting on spot)"
            ),
        )
        return cut, [], [note]
    return intent, [], []


def decide(intent: TradeIntent, state: BotState, limits: Limits, now: datetime) -> Decision:
    """Approve, or reject with every reason that applies. ``now`` is event time.

    Invariants: a rejection has at least one reason; an approval leaves every counted limit at or
    below its maximum (``counters_after``); an exit is never stopped by an entry-only rule.
    """
    reasons: list[Reason] = []
    adjustments: list[Reason] = []
    entering = intent.action in ("entry", "add")
    if intent.reference_price is None or intent.market_time is None:
        reasons.append(
            Reason(
                code="NO_MARKET_DATA",
                message=f"no price for {intent.product_id} yet: no price, no trade",
            )
        )
    if state.trading_state == "halted":
        reasons.append(
            Reason(code="HALTED", message=f"trading is halted: {state.trading_reason}"[:500])
        )
    if state.position is None:
        reasons.append(
            Reason(
                code="POSITION_UNKNOWN",
                message=(
                    f"bot {intent.bot_id}'s position is unknown or older than its last fill: "
                    "no trade until the ledger's position catches up"
                ),
            )
        )
    if state.orders_in_flight > 0:
        reasons.append(
            Reason(
                code="ORDER_IN_FLIGHT",
                message=(
                    f"bot {intent.bot_id} has {state.orders_in_flight} order(s) not yet final; "
                    "one order in flight per bot"
                ),
            )
        )
    if state.last_exit_at is not None:
        wait = _wait(state.last_exit_at, limits.exit_cooldown, now)
        if wait:
            reasons.append(
                Reason(
                    code="EXIT_COOLDOWN",
                    message=(
                        f"bot {intent.bot_id} exited at {state.last_exit_at:%Y-%m-%d %H:%M:%S}Z; "
                        f"{_duration(wait)} of the {_duration(limits.exit_cooldown)} "
                        "cooldown to go"
                    ),
                )
            )
    if (
        limits.intent_ttl is not None
        and intent.market_time is not None
        and state.market is not None
        and state.market.time - intent.market_time > limits.intent_ttl
    ):
        age = state.market.time - intent.market_time
        reasons.append(
            Reason(
                code="INTENT_EXPIRED",
                message=(
                    f"the intent was made on a price {_duration(age)} older than the newest; "
                    f"intents live {_duration(limits.intent_ttl)}"
                ),
            )
        )
    executed = intent
    notional = notional_of(intent) or ZERO
    if entering and state.trading_state == "reducing":
        reasons.append(
            Reason(
                code="REDUCING",
                message=f"only exits for now: {state.trading_reason}"[:500],
            )
        )
    if entering and state.position is not None:
        reasons.extend(_entry_reasons(intent, state, limits, now, notional))
    elif state.position is not None:
        executed, against, adjustments = _exit(intent, state)
        reasons.extend(against)
        notional = notional_of(executed) or ZERO
    seen = state.counters
    if reasons:
        return Decision(False, tuple(reasons), seen, seen, None, notional)
    after = seen
    if entering:
        opening = not (state.position or FLAT).is_open and state.entries_in_flight == 0
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
