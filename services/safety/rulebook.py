"""Safety's rules, one small function each (pure), and the list that says which intents each
one can stop. ``rules.decide`` runs them; the codes it can report derive from :data:`RULEBOOK`.

Every check takes the :class:`Facts` of one decision and returns a :class:`Reason` with a stable
code and a human sentence, or ``None`` when it has nothing against the intent.

Which intents a rule stops (``stops``):

* ``entry`` — entries and adds;
* ``signal`` — an exit a confirmed signal asked for;
* ``protective`` — a stop-loss, take-profit or trailing-stop exit (a standing order);
* ``flatten`` — the exit an operator's ``tranche flatten`` asks for (a standing order).

Standing exits pass the exit cooldown (they are asked again until the position is flat, so a
cooldown would only delay a stop); nothing passes a halt, an order in flight (or one the
exchange has lost) or an unknown position. docs/safety.md has the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from shared.contracts import Reason, TradeIntent

if TYPE_CHECKING:
    from services.safety.rules import BotState, Limits, Position

Kind = Literal["entry", "signal", "protective", "flatten"]
EVERY: frozenset[Kind] = frozenset({"entry", "signal", "protective", "flatten"})
ENTRIES: frozenset[Kind] = frozenset({"entry"})
EXITS_BUT_STANDING: frozenset[Kind] = frozenset({"entry", "signal"})
EXITS: frozenset[Kind] = frozenset({"signal", "protective", "flatten"})


@dataclass(frozen=True)
class Facts:
    """One decision's inputs; ``position`` is the known position (``None``: unknown)."""

    intent: TradeIntent
    state: BotState
    limits: Limits
    now: datetime
    notional: Decimal
    position: Position | None

    @property
    def bot(self) -> str:
        return self.intent.bot_id


Check = Callable[[Facts], Reason | None]


@dataclass(frozen=True)
class Rule:
    code: str
    stops: frozenset[Kind]
    check: Check
    needs_position: bool = False
    """Run only when the position is known (an unknown one is its own rejection)."""


def duration(delta: timedelta) -> str:
    total = int(delta.total_seconds() + 0.999)
    return f"{total // 60}m{total % 60:02d}s" if total >= 60 else f"{total}s"


def wait(since: datetime, cooldown: timedelta, now: datetime) -> timedelta | None:
    remaining = cooldown - (now - since)  # a difference of times never overflows
    return remaining if remaining > timedelta(0) else None


# -- rules every intent meets -------------------------------------------------------------------


def no_market_data(f: Facts) -> Reason | None:
    if f.intent.reference_price is not None and f.intent.market_time is not None:
        return None
    return Reason(
        code="NO_MARKET_DATA",
        message=f"no price for {f.intent.product_id} yet: no price, no trade",
    )


def buy_sized_in_base(f: Facts) -> Reason | None:
    """A market buy is sized in quote (the contract, DESIGN.md): sized in base, what it spends
    is the base size at whatever the market asks, and the only price safety could measure it at
    is the one the intent itself gives. 1,000 ETH "at 0.00000001" passed every notional limit."""
    intent = f.intent
    if intent.base_size is None or intent.order_type != "market":
        return None
    return Reason(
        code="BUY_SIZED_IN_BASE",
        message=(
            f"a market buy of {intent.base_size} {intent.product_id} sized in base: entries and "
            "adds are sized in quote (quote_size), so the limits measure what they spend"
        ),
    )


def halted(f: Facts) -> Reason | None:
    if f.state.trading_state != "halted":
        return None
    return Reason(code="HALTED", message=f"trading is halted: {f.state.trading_reason}"[:500])


def position_unknown(f: Facts) -> Reason | None:
    if f.position is not None:
        return None
    return Reason(
        code="POSITION_UNKNOWN",
        message=(
            f"bot {f.bot}'s position is unknown or older than its last fill: "
            "no trade until the ledger's position catches up"
        ),
    )


def order_unknown_at_exchange(f: Facts) -> Reason | None:
    lost = f.state.unknown_at_exchange
    if not lost:
        return None
    fix = "; ".join(f"tranche orders resolve {c} --as cancelled|filled --reason ..." for c in lost)
    return Reason(
        code="ORDER_UNKNOWN_AT_EXCHANGE",
        message=(
            f"bot {f.bot}'s order {', '.join(lost)} is unknown at the exchange (it answers 404 "
            f"and lists neither the order nor its fills); settle it by hand: {fix}"
        )[:500],
    )


def order_in_flight(f: Facts) -> Reason | None:
    others = f.state.orders_in_flight - len(f.state.unknown_at_exchange)
    if others <= 0:
        return None
    return Reason(
        code="ORDER_IN_FLIGHT",
        message=f"bot {f.bot} has {others} order(s) not yet final; one order in flight per bot",
    )


def exit_cooldown(f: Facts) -> Reason | None:
    last = f.state.last_exit_at
    left = wait(last, f.limits.exit_cooldown, f.now) if last is not None else None
    if not left:
        return None
    return Reason(
        code="EXIT_COOLDOWN",
        message=(
            f"bot {f.bot} exited at {last:%Y-%m-%d %H:%M:%S}Z; {duration(left)} of the "
            f"{duration(f.limits.exit_cooldown)} cooldown to go"
        ),
    )


def intent_expired(f: Facts) -> Reason | None:
    ttl, made, market = f.limits.intent_ttl, f.intent.market_time, f.state.market
    if ttl is None or made is None or market is None or market.time - made <= ttl:
        return None
    return Reason(
        code="INTENT_EXPIRED",
        message=(
            f"the intent was made on a price {duration(market.time - made)} older than the "
            f"newest; intents live {duration(ttl)}"
        ),
    )


def reducing(f: Facts) -> Reason | None:
    if f.state.trading_state != "reducing":
        return None
    return Reason(code="REDUCING", message=f"only exits for now: {f.state.trading_reason}"[:500])


# -- entry-only rules ---------------------------------------------------------------------------


def entry_cooldown(f: Facts) -> Reason | None:
    last = f.state.last_entry_at
    left = wait(last, f.limits.entry_cooldown, f.now) if last is not None else None
    if not left:
        return None
    return Reason(
        code="ENTRY_COOLDOWN",
        message=(
            f"bot {f.bot} entered at {last:%Y-%m-%d %H:%M:%S}Z; entries are "
            f"{duration(f.limits.entry_cooldown)} apart, {duration(left)} to go"
        ),
    )


def stale_market_data(f: Facts) -> Reason | None:
    most, arrived, made = f.limits.max_market_age, f.state.received_at, f.intent.market_time
    if most is None or arrived is None or made is None or arrived - made <= most:
        return None
    return Reason(
        code="STALE_MARKET_DATA",
        message=(
            f"the {f.intent.product_id} price is {duration(arrived - made)} old, more than "
            f"{duration(most)}: no new entries on a stale feed"
        ),
    )


def price_band(f: Facts) -> Reason | None:
    band, price, market = f.limits.price_band_pct, f.intent.reference_price, f.state.market
    if band is None or price is None or market is None:
        return None
    moved = abs(market.price - price) / price * 100
    if moved <= band:
        return None
    return Reason(
        code="PRICE_BAND",
        message=(
            f"{f.intent.product_id} trades at {market.price}, {moved:.2f} % from the signal's "
            f"{price}; the band is {band} %"
        ),
    )


def add_step(f: Facts) -> Reason | None:
    position, price, step = f.position, f.intent.reference_price, f.limits.add_step_pct
    assert position is not None
    if not (f.intent.action == "add" or position.is_open):
        return None
    last = position.last_entry_price
    if step <= 0 or last is None or price is None:
        return None
    needed = last * (1 - step / 100)
    if price <= needed:
        return None
    return Reason(
        code="ADD_STEP",
        message=(
            f"an add needs the price {step} % below the last entry at {last}, at most "
            f"{needed}; it is {price}"
        ),
    )


def tranche_cap(f: Facts) -> Reason | None:
    assert f.position is not None
    tranches = f.position.tranches + f.state.entries_in_flight
    if tranches < f.limits.max_tranches:
        return None
    return Reason(
        code="TRANCHE_CAP",
        message=(
            f"bot {f.bot}'s position already has {tranches} of its {f.limits.max_tranches} "
            "entry tranches; only exits until it closes"
        ),
    )


def _counted(code: str, used: str, limit: str, who: str, window: str) -> Check:
    """A rule on a count of entries in a rolling window (``used``: a Counters field, ``limit``:
    a Limits field)."""

    def check(f: Facts) -> Reason | None:
        count, most = getattr(f.state.counters, used), getattr(f.limits, limit)
        if most is None or count + 1 <= most:
            return None
        whom = who.format(bot=f.bot)
        return Reason(
            code=code,
            message=f"{whom} {count} of {most} allowed entries {window} ({f.state.mode})",
        )

    check.__name__ = code.lower()
    return check


def bot_notional_per_day(f: Facts) -> Reason | None:
    spent, most = f.state.counters.bot_notional_day, f.limits.max_notional_per_bot_day
    if most is None or spent + f.notional <= most:
        return None
    return Reason(
        code="BOT_NOTIONAL_PER_DAY",
        message=(
            f"bot {f.bot} spent {spent} in the last 24 hours; {f.notional} more passes its "
            f"{most} a day"
        ),
    )


def opens_a_position(f: Facts) -> bool:
    return f.position is not None and not f.position.is_open and f.state.entries_in_flight == 0


def open_positions(f: Facts) -> Reason | None:
    most, count = f.limits.max_open_positions, f.state.counters.open_positions
    if most is None or not opens_a_position(f) or count + 1 <= most:
        return None
    return Reason(
        code="OPEN_POSITIONS",
        message=f"{count} positions are open across all bots, the limit is {most}",
    )


def position_notional(f: Facts) -> Reason | None:
    most, price = f.limits.max_position_notional, f.intent.reference_price
    assert f.position is not None
    if most is None or price is None:
        return None
    held = f.position.quantity * price
    if held + f.notional <= most:
        return None
    return Reason(
        code="POSITION_NOTIONAL",
        message=(
            f"bot {f.bot} holds {held:.8f} at {price}; {f.notional} more passes its maximum "
            f"position of {most}"
        ),
    )


def order_too_large(f: Facts) -> Reason | None:
    most = f.limits.max_order_notional
    if most is None or f.notional <= most:
        return None
    return Reason(
        code="ORDER_TOO_LARGE", message=f"an order of {f.notional} is above the maximum {most}"
    )


def order_too_small(f: Facts) -> Reason | None:
    least = f.limits.min_order_notional
    if least is None or f.notional >= least:
        return None
    return Reason(
        code="ORDER_TOO_SMALL", message=f"an order of {f.notional} is below the minimum {least}"
    )


def production_ramp(f: Facts) -> Reason | None:
    limits, state = f.limits, f.state
    if (
        state.mode != "production"
        or limits.ramp_max_notional is None
        or state.production_entries >= limits.ramp_trades
        or f.notional <= limits.ramp_max_notional
    ):
        return None
    return Reason(
        code="PRODUCTION_RAMP",
        message=(
            f"bot {f.bot} has made {state.production_entries} of its first {limits.ramp_trades} "
            f"production entries, each capped at {limits.ramp_max_notional}; {f.notional} is more"
        ),
    )


# -- the exit's own rule ------------------------------------------------------------------------


def nothing_to_sell(f: Facts) -> Reason | None:
    """No shorting on spot: an exit needs a position, and a quote-sized one (it cannot be cut
    to the position, what it sells depends on the fill price) must fit in it."""
    assert f.position is not None
    if not f.position.is_open:
        return Reason(code="NOTHING_TO_SELL", message=f"bot {f.bot} holds no position")
    intent, price = f.intent, f.intent.reference_price
    if intent.base_size is not None or price is None:
        return None
    assert intent.quote_size is not None, "a TradeIntent has exactly one size"
    if intent.quote_size / price <= f.position.quantity:
        return None
    return Reason(
        code="NOTHING_TO_SELL",
        message=(
            f"an exit of {intent.quote_size} at {price} sells more than the "
            f"{f.position.quantity} bot {f.bot} holds"
        ),
    )


#: Every rule in the order its reason is reported.
RULEBOOK: tuple[Rule, ...] = (
    Rule("NO_MARKET_DATA", EVERY, no_market_data),
    Rule("HALTED", EVERY, halted),
    Rule("POSITION_UNKNOWN", EVERY, position_unknown),
    Rule("ORDER_UNKNOWN_AT_EXCHANGE", EVERY, order_unknown_at_exchange),
    Rule("ORDER_IN_FLIGHT", EVERY, order_in_flight),
    Rule("EXIT_COOLDOWN", EXITS_BUT_STANDING, exit_cooldown),
    Rule("INTENT_EXPIRED", EVERY, intent_expired),
    Rule("REDUCING", ENTRIES, reducing),
    Rule("BUY_SIZED_IN_BASE", ENTRIES, buy_sized_in_base),
    Rule("ENTRY_COOLDOWN", ENTRIES, entry_cooldown, needs_position=True),
    Rule("STALE_MARKET_DATA", ENTRIES, stale_market_data, needs_position=True),
    Rule("PRICE_BAND", ENTRIES, price_band, needs_position=True),
    Rule("ADD_STEP", ENTRIES, add_step, needs_position=True),
    Rule("TRANCHE_CAP", ENTRIES, tranche_cap, needs_position=True),
    Rule(
        "BOT_ENTRIES_PER_HOUR", ENTRIES,
        _counted("BOT_ENTRIES_PER_HOUR", "bot_entries_hour", "max_entries_per_bot_hour",
                 "bot {bot} made", "in the last hour"),
        needs_position=True,
    ),
    Rule(
        "BOT_ENTRIES_PER_DAY", ENTRIES,
        _counted("BOT_ENTRIES_PER_DAY", "bot_entries_day", "max_entries_per_bot_day",
                 "bot {bot} made", "in the last 24 hours"),
        needs_position=True,
    ),
    Rule(
        "ALL_ENTRIES_PER_HOUR", ENTRIES,
        _counted("ALL_ENTRIES_PER_HOUR", "all_entries_hour", "max_entries_all_hour",
                 "all bots made", "in the last hour"),
        needs_position=True,
    ),
    Rule(
        "ALL_ENTRIES_PER_DAY", ENTRIES,
        _counted("ALL_ENTRIES_PER_DAY", "all_entries_day", "max_entries_all_day",
                 "all bots made", "in the last 24 hours"),
        needs_position=True,
    ),
    Rule("BOT_NOTIONAL_PER_DAY", ENTRIES, bot_notional_per_day, needs_position=True),
    Rule("OPEN_POSITIONS", ENTRIES, open_positions, needs_position=True),
    Rule("POSITION_NOTIONAL", ENTRIES, position_notional, needs_position=True),
    Rule("ORDER_TOO_LARGE", ENTRIES, order_too_large, needs_position=True),
    Rule("ORDER_TOO_SMALL", ENTRIES, order_too_small, needs_position=True),
    Rule("PRODUCTION_RAMP", ENTRIES, production_ramp, needs_position=True),
    Rule("NOTHING_TO_SELL", EXITS, nothing_to_sell, needs_position=True),
)  # fmt: skip


def rules_for(kind: Kind) -> tuple[Rule, ...]:
    """The rules an intent of this kind meets, in report order."""
    return tuple(rule for rule in RULEBOOK if kind in rule.stops)


def passes(kind: Kind) -> tuple[str, ...]:
    """The codes an intent of this kind is never stopped by (docs/safety.md's table)."""
    return tuple(rule.code for rule in RULEBOOK if kind not in rule.stops)
