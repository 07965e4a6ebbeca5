"""The four services' decision cores wired in-process, for the outcome ring.

* signal: its real handlers (``services/signal/handlers.py``) with an in-memory store;
* safety: its pure ``decide`` on a :class:`BotState` this module gathers as safety's store
  does (approvals, orders in flight, the ledger's position, the trading state);
* executor: its order sizing, state machine and mock exchange (matching, pricing at the
  intent's price, fees, partial limit fills, injected rejects), see ``tests/outcomes/exchange.py``;
* ledger: its pure ``book_fills``; the position reaches the signal one tick late (as the
  bucket may), and safety sees it fresh (it waits for the ledger's newer position).

No broker, no clock: a tick's time is event time (the mock's book is in-memory SQLite).
``World.violations`` collects every broken trader invariant with a sentence; the ring asserts
it stays empty.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from services.executor.exchanges.mock import Quote
from services.ledger.accounting import book_fills
from services.safety.rules import BotState, Counters, Limits, Position, decide, decision_time
from services.signal.handlers import SignalHandlers
from shared.catalog import Bot, Product
from shared.contracts import PositionUpdate, Reason, Ticker, TradeIntent
from tests.outcomes.exchange import Fill, RingExchange
from tests.support.signal_harness import signal_harness

BOT = "ring"
PRODUCT = "ETH-BTC"
T0 = datetime(2018, 1, 20, 12, 0, tzinfo=UTC)
INCREMENT = Decimal("0.00000001")
MIN_SIZE = Decimal("0.001")
STOP_PCT = Decimal(1)
LIMITS = Limits(
    entry_cooldown=timedelta(seconds=60),
    exit_cooldown=timedelta(seconds=60),
    max_entries_per_bot_hour=6,
    max_entries_per_bot_day=24,
    price_band_pct=None,
    intent_ttl=None,
    max_market_age=None,
)
RING_BOT = Bot(
    product_id=PRODUCT,
    quote_size=Decimal("0.01"),
    stop_loss_pct=STOP_PCT,
    exit_fraction=Decimal("0.5"),
)
RING_PRODUCT = Product(
    base_min_size=MIN_SIZE,
    base_increment=INCREMENT,
    quote_increment=INCREMENT,  # the ring's prices move on this grid
    quote_min_size=INCREMENT,  # no minimum order value: dust at a low price can still be sold
)


@dataclass
class World:
    handlers: SignalHandlers
    intents: list[TradeIntent]
    now: datetime = T0
    price: Decimal = Decimal("0.09")
    state: str = "active"
    flatten_asked_at: int | None = None
    exchange: RingExchange = field(init=False)
    approvals: list[tuple[datetime, TradeIntent]] = field(default_factory=list)
    decided: int = 0
    ticks: int = 0
    past_stop_since: int | None = None
    past_stop_fills: int = 0
    exit_approved_at: int | None = None
    decision_times: list[datetime] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    steps: int = 0

    def __post_init__(self) -> None:
        self.exchange = RingExchange(
            PRODUCT, RING_PRODUCT, lambda: Quote(price=self.price, time=self.now)
        )

    # -- the ledger ------------------------------------------------------------------------------

    @property
    def fills(self):
        return self.exchange.ledger_fills()

    def book(self):
        return book_fills(self.fills, min_size=MIN_SIZE, size_increment=INCREMENT).current

    def position_update(self) -> PositionUpdate:
        current = self.book()
        number = len(book_fills(self.fills, min_size=MIN_SIZE, size_increment=INCREMENT).positions)
        held = current is not None
        return PositionUpdate(
            message_id=f"pos-{len(self.fills)}",
            correlation_id="ring",
            time=self.now,
            bot_id=BOT,
            product_id=PRODUCT,
            mode="mock",
            position_id=f"{BOT}-mock-{number}" if held else None,
            status="open" if held else "flat",
            quantity=current.quantity if held else Decimal(0),
            average_entry_price=current.average_entry_price if held else None,
            break_even_price=current.break_even_price if held else None,
            cost_basis=current.cost_basis if held else Decimal(0),
            realized_pnl=Decimal(0),
            fees_paid=Decimal(0),
            tranches=[],
            sequence=len(self.fills),
        )

    # -- safety ------------------------------------------------------------------------------------

    def safety_state(self, now: datetime) -> BotState:
        approved = [(t, i) for t, i in self.approvals]
        entries = [t for t, i in approved if i.action != "exit"]
        exits = [t for t, i in approved if i.action == "exit"]
        in_flight = [o for o in self.exchange.orders if not o.final]
        current = self.book()
        position = (
            Position(
                quantity=current.quantity,
                tranches=len(current.tranches),
                last_entry_price=current.tranches[-1].entry_price,
                cost_basis=current.cost_basis,
            )
            if current is not None
            else Position()
        )
        hour = [t for t in entries if t > now - timedelta(hours=1)]
        day = [t for t in entries if t > now - timedelta(days=1)]
        return BotState(
            trading_state=self.state,  # type: ignore[arg-type]
            trading_reason="ring",
            last_entry_at=max(entries, default=None),
            last_exit_at=max(exits, default=None),
            orders_in_flight=len(in_flight),
            entries_in_flight=len([o for o in in_flight if o.intent.action != "exit"]),
            position=position,
            counters=Counters(
                bot_entries_hour=len(hour),
                bot_entries_day=len(day),
                all_entries_hour=len(hour),
                all_entries_day=len(day),
            ),
        )

    def decide(self, intent: TradeIntent, fill: Fill) -> None:
        now = decision_time(intent)
        if self.decision_times and now < self.decision_times[-1]:
            self.violations.append(f"event time went back: {now} after {self.decision_times[-1]}")
        self.decision_times.append(now)
        self.decided += 1
        decision = decide(intent, self.safety_state(now), LIMITS, now)
        if not decision.approved:
            return
        executed = decision.intent
        assert executed is not None
        self.approvals.append((now, executed))
        if executed.action == "exit":
            self.exit_approved_at = self.ticks
        self.place(executed, fill)
        self.check_limits(now)

    # -- the exchange ------------------------------------------------------------------------------

    def place(self, intent: TradeIntent, fill: Fill) -> None:
        if intent.side == "sell":
            held = self.book()
            held_qty = held.quantity if held is not None else Decimal(0)
            if intent.base_size is not None and intent.base_size > held_qty:
                self.violations.append(f"a sell of {intent.base_size} while {held_qty} is held")
        self.exchange.place(intent, fill, self.now)

    # -- invariants ------------------------------------------------------------------------------

    def check_limits(self, now: datetime) -> None:
        hour = [t for t, i in self.approvals if i.action != "exit" and t > now - timedelta(hours=1)]
        if len(hour) > LIMITS.max_entries_per_bot_hour:  # type: ignore[operator]
            self.violations.append(f"{len(hour)} entries approved in an hour")

    def check(self, stop_within: int, flat_within: int) -> None:
        net = self.exchange.net_filled()
        current = self.book()
        booked = current.quantity if current is not None else Decimal(0)
        if (current is None and net >= MIN_SIZE) or (current is not None and booked != net):
            self.violations.append(f"the ledger holds {booked}, the exchange's net fills {net}")
        if current is not None and len(current.tranches) > 3:
            self.violations.append(f"{len(current.tranches)} tranches")
        if (
            self.past_stop_since is not None
            and self.state != "halted"
            and self.ticks - self.past_stop_since >= stop_within
            and (self.exit_approved_at is None or self.exit_approved_at < self.past_stop_since)
        ):
            self.violations.append(
                f"past its stop for {self.ticks - self.past_stop_since} evaluations, no exit"
            )
        if (
            self.flatten_asked_at is not None
            and self.state != "halted"
            and current is not None
            and self.ticks - self.flatten_asked_at >= flat_within
        ):
            self.violations.append(
                f"flatten asked {self.ticks - self.flatten_asked_at} ticks ago, still holds "
                f"{current.quantity}"
            )

    # -- what the machine does -------------------------------------------------------------------

    def run(self, coroutine) -> None:
        asyncio.run(coroutine)
        self.steps += 1

    def handle_new_intents(self, fill: Fill) -> None:
        while self.decided < len(self.intents):
            self.decide(self.intents[self.decided], fill)

    def tick(self, seconds: int, move_pct: Decimal, fill: Fill) -> None:
        """One ticker: the signal first sees the ledger's position of the tick before (the
        bucket lags), the exchange matches (or cancels) resting rests, the signal evaluates."""
        self.run(self.handlers.keep_position(self.position_update()))
        self.now += timedelta(seconds=seconds)
        self.price = max((self.price * (1 + move_pct / 100)).quantize(INCREMENT), Decimal("0.0001"))
        self.exchange.on_tick(self.now)
        self.ticks += 1
        current = self.book()
        if self.state == "halted":
            self.past_stop_since = None  # nothing passes a halt: evaluations count from resume
        elif (
            current is not None
            and current.break_even_price is not None
            and self.price <= current.break_even_price * (1 - STOP_PCT / 100)
        ):
            # Counted per state of the position: a partial exit that leaves it past its stop
            # does not stand for the exit of what remains.
            if self.past_stop_since is None or self.past_stop_fills != len(self.fills):
                self.past_stop_since, self.past_stop_fills = self.ticks, len(self.fills)
        else:
            self.past_stop_since = None
        if current is None and self.flatten_asked_at is not None:
            self.flatten_asked_at = None
        tick = Ticker(product_id=PRODUCT, price=self.price, time=self.now)
        self.run(self.handlers.evaluate_tick(tick))
        self.handle_new_intents(fill)

    def inject(self, side: Literal["buy", "sell"], fill: Fill) -> None:
        running = self.handlers.bots.get(BOT)
        assert running is not None
        signal_id = f"inject-{len(self.intents)}-{self.steps}"
        self.run(
            self.handlers.confirm(
                BOT,
                running,
                side,
                Decimal(80),
                self.now,
                signal_id,
                "operator",
                None,
                skip_confirmation=True,
            )
        )
        self.handle_new_intents(fill)

    def flatten(self, fill: Fill) -> None:
        if self.state == "halted":
            return  # safety refuses a flatten while halted
        self.state = "reducing"
        if self.book() is not None:
            self.flatten_asked_at = self.ticks
        self.run(self.handlers.flatten_requested(BOT, "ring", f"evt-{self.steps}"))
        self.handle_new_intents(fill)

    def resume(self) -> None:
        self.state = "active"
        self.flatten_asked_at = None
        self.run(self.handlers.resumed(BOT))  # safety's RESUME event, as signal's app hears it

    def halt(self) -> None:
        self.state = "halted"

    def restart_signal(self) -> None:
        """A new signal process on the same database: flattens stand, memory starts empty."""
        old = self.handlers
        fresh = SignalHandlers(
            bots=old.bots,
            transact=old.transact,
            publish_evaluation=old.publish_evaluation,
            on_intent=old.on_intent,
        )
        self.handlers = fresh
        self.run(fresh.load_flattens())


def new_world() -> World:
    harness = signal_harness()
    harness.bots.add(BOT, RING_BOT)
    return World(handlers=harness.handlers, intents=harness.intents)


def stop_reason() -> Reason:
    return Reason(code="STOP_LOSS", message="ring")
