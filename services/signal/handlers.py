"""What the signal service does with a tick, an injected signal, a position and a flatten: the
handlers, with the store, the publisher and the bots injected (``app.py`` wires them to NATS,
tests and the outcome ring wire them to fakes). Decisions are the pure modules' (intents,
protection, standing, confirmation); this module keeps the per-bot state between them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol, TypeVar

from prometheus_client import Counter
from sqlmodel import Session

from services.signal.bots import RunningBot
from services.signal.confirmation import Progress
from services.signal.exchange_stop import ExchangeStop, asks_again, stands_down, stop_intent
from services.signal.intents import Market, decide_intent
from services.signal.protection import protective_exit
from services.signal.standing import StandingExits, backoff_after, flatten_reason, holds
from services.signal.store import (
    FlattenRecord,
    StopStateRow,
    first_time,
    flattens,
    highs,
    record,
    save_high,
    save_stop_state,
    stop_states,
)
from services.signal.temperature import bands_of
from shared.catalog import Product
from shared.contracts import (
    FINAL_ORDER_STATUSES,
    Band,
    OrderEvent,
    OrderRejected,
    PositionUpdate,
    Reason,
    SafetyEvent,
    Side,
    SignalEvaluation,
    Ticker,
    TradeIntent,
)
from shared.exits import STOP_ON_EXCHANGE
from shared.logging import correlated, get_logger
from shared.stops import AskedStop, StopOrder, desired_stop, is_stop_intent

Change = Callable[[Session], None]

T = TypeVar("T")
Transact = Callable[[Callable[[Session], T]], Awaitable[T]]

IN_FLIGHT_REFUSALS = frozenset({"ORDER_IN_FLIGHT"})
"""Why safety refuses a stop that safety's own word of no order in flight clears."""
INTENTS = Counter("tranche_signal_intents_total", "Intents created", ["action", "band"])
NO_INTENT = Counter("tranche_signal_no_intent_total", "Signals that made no intent", ["code"])


class Bots(Protocol):
    def get(self, bot_id: str) -> RunningBot | None: ...

    def trading(self, product_id: str) -> list[tuple[str, RunningBot]]: ...


@dataclass(frozen=True)
class Refusals:
    """How many stops of one state of the position safety refused, when the last was (event
    time), when its back-off ends, and its reasons."""

    state: str
    count: int
    at: datetime
    retry_at: datetime
    reasons: frozenset[str]


def ended_reason(status: str, code: str | None, attempts: int) -> Reason:
    """Why a position has no stop after its stop ended and is not asked again."""
    if code == "HALT":
        why = "a halt cancelled it (tranche halt --cancel-stops)"
    elif code == "STOP_BEFORE_SELL":
        why = "it was cancelled before another sell of the bot"
    else:
        why = f"it ended {status} ({code or 'no reason'}), {attempts} time(s) for this state"
    return Reason(
        code="STOP_ENDED",
        message=f"no stop on the exchange: {why}; the signal service's stop-loss protects it",
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a bot's strategy said on a candle a tick closed, and where its confirmation stands."""

    bot_id: str
    direction: Side | Literal["hold"]
    temperature: Decimal
    score: Decimal | None
    """The blend's score (``None`` for an injected signal)."""
    band: Band
    end: datetime
    """The evaluation's event time: the end of the candle it judged (an injected signal's time)."""
    progress: Progress


def confirmation_of(
    running: RunningBot, side: Side | Literal["hold"], temperature: Decimal, time: datetime
) -> tuple[Band, Progress]:
    """Feed one evaluation to the bot's confirmation: its band, and where the run stands."""
    band = bands_of(running.config).band_of(temperature)
    return band, running.runtime.confirmation.feed(side, band, time)


def judge(bots: Bots, tick: Ticker) -> list[Verdict]:
    """The strategy's part of a tick, for each bot trading its product: the tick into the bot's
    candles and, when it closes one, the candle into the bot's signals and confirmation. It
    reads only the ticks (no position, no store, no clock), so the same ticks give the same
    verdicts wherever it runs. Call it for ticks :meth:`SignalHandlers.take_price` keeps."""
    verdicts = []
    for bot_id, running in bots.trading(tick.product_id):
        runtime = running.runtime
        candle = runtime.candles.add(tick.price, tick.time)
        if candle is None or runtime.blend is None:
            continue
        evaluation = runtime.blend.update(candle)
        end = candle.end
        band, progress = confirmation_of(running, evaluation.direction, evaluation.temperature, end)
        verdicts.append(Verdict(bot_id, evaluation.direction, evaluation.temperature,
                                evaluation.score, band, end, progress))  # fmt: skip
    return verdicts


@dataclass
class SignalHandlers:
    bots: Bots
    transact: Transact[Any]
    publish_evaluation: Callable[[SignalEvaluation], Awaitable[None]] | None
    """Where every evaluation goes; ``None``: nowhere, and none is built (the backtest, whose
    journal holds no evaluations, only counts them: :attr:`evaluated`)."""
    stale_after_s: float = 30.0
    on_intent: Callable[[TradeIntent], None] | None = None
    """Told of every stored intent (the lock-step replay counts them)."""
    evaluated: int = 0
    """Evaluations made (published or not)."""
    on_stop: Callable[[TradeIntent | OrderEvent], None] | None = None
    """Told of every stop intent stored, and of every stop's order event once handled (the
    lock-step replay waits until the signal has heard each stop rest or end)."""
    markets: dict[str, Market] = field(default_factory=dict)
    stale: set[str] = field(default_factory=set)
    positions: dict[str, PositionUpdate] = field(default_factory=dict)
    standing: StandingExits = field(default_factory=StandingExits)
    flattening: dict[str, str] = field(default_factory=dict)
    """Bots an operator asked to flatten, with the reason; cleared when flat or resumed."""
    products: Mapping[str, Product] = field(default_factory=dict)
    """Trading rules a stop on the exchange is sized by (none: no stop is asked)."""
    stops_asked: dict[str, str] = field(default_factory=dict)
    """Per bot, the intent id of the stop last asked (one per state of the position)."""
    stop_attempts: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Per bot, the state of the position (position id and sequence) and how many of its stops
    ended without being meant to (asked again: services/signal/exchange_stop.py)."""
    stop_reasons: dict[str, Reason | None] = field(default_factory=dict)
    """Per bot, why it has the stop it has, or none (``tranche status``, the dashboard)."""
    stop_refusals: dict[str, Refusals] = field(default_factory=dict)
    """Per bot, the stops of the position's state safety refused (an entry not final yet in its
    view, a halt): a refused stop is asked again, at once the first time, then backing off in
    event time as standing exits do, or as soon as safety says (in a readiness judged at or
    after the refusal, in event time) that the order in flight it waited for is gone."""
    highs_kept: dict[str, tuple[str, Decimal]] = field(default_factory=dict)
    """Per bot, the trailing stop's mark as stored (position id, high): written when it rises,
    read at start (the runtime's in-memory mark is lost with a restart)."""
    stop_orders: dict[str, ExchangeStop] = field(default_factory=dict)
    """Per bot, the stop last asked and its order's status as its order events tell it: while
    the exchange holds it, the signal's own stop-loss stands down above its limit price."""

    def __post_init__(self) -> None:
        self.log = get_logger("signal")
        self._position_changed: dict[str, asyncio.Event] = {}

    # -- intents ----------------------------------------------------------------------------------

    async def act(
        self,
        bot_id: str,
        running: RunningBot,
        side: Side,
        temperature: Decimal,
        signal_id: str,
        time: datetime,
        source: str,
        protective: Reason | None = None,
        position_wait_s: float = 0.0,
    ) -> TradeIntent | None:
        """Turn a confirmed signal (or a standing exit) into an intent, stored with its outbox
        message; a signal already handled makes nothing new. A sell that finds no position
        first waits up to ``position_wait_s`` for a newer one (the position lags a fill)."""
        bot = running.config
        if side == "sell" and position_wait_s > 0 and not holds(self.positions.get(bot_id)):
            await self.newer_position(bot_id, position_wait_s)
        outcome: TradeIntent | Reason
        if side == "buy" and running.state.paused:
            outcome = Reason(
                code="BOT_PAUSED", message=f"bot {bot_id} is paused: no entries or adds"
            )
        elif side == "buy" and bot.product_id in self.stale:
            outcome = Reason(
                code="STALE_MARKET_DATA",
                message=f"no tick for {bot.product_id} in {self.stale_after_s:g} s: no entry",
            )
        else:
            outcome = decide_intent(
                bot_id=bot_id,
                bot=bot,
                side=side,
                temperature=temperature,
                signal_id=signal_id,
                signal_time=time,
                source=source,
                position=self.positions.get(bot_id),
                market=self.markets.get(bot.product_id),
                protective=protective,
            )
        intent = outcome if isinstance(outcome, TradeIntent) else None
        reason = outcome.reason if isinstance(outcome, TradeIntent) else outcome
        staged = await self._store(bot_id, signal_id, side, time, intent, reason)
        with correlated(intent.intent_id if intent else signal_id, bot_id=bot_id):
            if staged is not None:
                INTENTS.labels(staged.action, staged.band).inc()
                self.log.info("intent.created", action=staged.action, side=side,
                              band=staged.band, reason=reason.code)  # fmt: skip
            elif intent is None:
                NO_INTENT.labels(reason.code).inc()
                self.log.info("signal.no_intent", code=reason.code, reason=reason.message)
        if staged is not None and self.on_intent is not None:
            self.on_intent(staged)
        return staged

    async def _store(
        self,
        bot_id: str,
        signal_id: str,
        side: Side,
        time: datetime,
        intent: TradeIntent | None,
        reason: Reason,
        also: Change | None = None,
    ) -> TradeIntent | None:
        """Store the signal's outcome with its intent's outbox message, and ``also``'s change in
        the same transaction; a signal already handled stores nothing more (``None``)."""

        def change(session: Session) -> TradeIntent | None:
            if also is not None:
                also(session)
            stored = record(session, signal_id=signal_id, bot_id=bot_id, side=side, time=time,
                            intent=intent, reason=reason)  # fmt: skip
            return intent if stored else None

        return await self.transact(change)

    async def keep_stop(self, bot_id: str, running: RunningBot, now_clear: bool = False) -> None:
        """Ask for the position's protective stop on the exchange once per state of the position
        (services/signal/exchange_stop.py); a bot without ``stop_on_exchange`` asks nothing."""
        bot = running.config
        if not bot.stop_on_exchange:
            return
        position = self.positions.get(bot_id)
        if position is None:
            # Not known yet (a restart reads the positions after the first ticks): the state
            # kept for the position's stop stands until it is.
            self.stop_reasons[bot_id] = None
            return
        state = f"{position.position_id}:{position.sequence}"
        seen, attempt = self.stop_attempts.get(bot_id, (state, 0))
        if seen != state:
            attempt = 0
        self.stop_attempts[bot_id] = (state, attempt)
        refused = self.stop_refusals.get(bot_id)
        refusals = 0
        if refused is not None and refused.state != state:
            self.stop_refusals.pop(bot_id, None)
        elif refused is not None:
            refusals = refused.count
            market = self.markets.get(bot.product_id)
            waiting = market is None or market.time < refused.retry_at
            if bot_id not in self.stops_asked and waiting and not now_clear:
                return  # a refused stop backs off in event time before it is asked again
        outcome = stop_intent(
            bot_id=bot_id,
            bot=bot,
            position=position,
            product=self.products.get(bot.product_id),
            market=self.markets.get(bot.product_id),
            temperature=running.runtime.temperature,
            attempt=attempt + refusals,
        )
        if not isinstance(outcome, TradeIntent):
            if outcome is not None and self.stop_reasons.get(bot_id) != outcome:
                self.log.info("stop.none", bot_id=bot_id, code=outcome.code, why=outcome.message)
            self.stop_reasons[bot_id] = outcome
            return
        if self.stops_asked.get(bot_id) == outcome.intent_id:
            self.stop_reasons[bot_id] = outcome.reason  # asked before (a restart forgets why)
            return
        size, stop_price, limit = outcome.base_size, outcome.stop_price, outcome.limit_price
        assert position.position_id is not None  # a stop was asked: the position is open
        assert size is not None and stop_price is not None and limit is not None
        self.stops_asked[bot_id] = outcome.intent_id
        self.stop_reasons[bot_id] = outcome.reason
        order = StopOrder(size, stop_price, limit)
        self.stop_orders[bot_id] = ExchangeStop(
            outcome.intent_id, position.position_id, position.sequence, order
        )
        staged = await self._store(
            bot_id, outcome.signal_id, "sell", outcome.time, outcome, outcome.reason,
            also=self.stop_saved(bot_id),
        )  # fmt: skip
        if staged is not None:
            INTENTS.labels(staged.action, staged.band).inc()
            with correlated(staged.intent_id, bot_id=bot_id):
                self.log.info("stop.asked", size=str(staged.base_size),
                              stop_price=str(staged.stop_price))  # fmt: skip
            # Not told to ``on_intent``: a lock-step replay waits for every intent's order to be
            # final, and a resting stop is not final until it fills or is replaced.
            if self.on_stop is not None:
                self.on_stop(staged)

    def stop_saved(self, bot_id: str) -> Change:
        """The change that writes the bot's stop state as it is in memory now (an upsert)."""
        stop = self.stop_orders.get(bot_id)
        state, attempts = self.stop_attempts.get(bot_id, ("", 0))
        refused = self.stop_refusals.get(bot_id)
        row = StopStateRow(
            bot_id=bot_id,
            asked_intent_id=self.stops_asked.get(bot_id),
            position_id=stop.position_id if stop else None,
            sequence=stop.sequence if stop else None,
            size=stop.order.size if stop else None,
            stop_price=stop.order.stop_price if stop else None,
            limit_price=stop.order.limit_price if stop else None,
            status=stop.status if stop else None,
            attempt_state=state,
            attempts=attempts,
            refusal_state=refused.state if refused else None,
            refusals=refused.count if refused else 0,
            refused_at=refused.at if refused else None,
            retry_at=refused.retry_at if refused else None,
            refusal_codes=",".join(sorted(refused.reasons)) if refused else "",
        )
        return lambda session: save_stop_state(session, row)

    async def load_stops(self) -> None:
        """The stop state kept before a restart: the stop asked and its last status, the stops
        of the position's state that ended or were refused (so the next one is asked under the
        next attempt's id, not the id of one that ended)."""
        for row in await self.transact(stop_states):
            if row.asked_intent_id is not None:
                self.stops_asked[row.bot_id] = row.asked_intent_id
            if row.attempt_state:
                self.stop_attempts[row.bot_id] = (row.attempt_state, row.attempts)
            if row.refusal_state is not None and row.refused_at and row.retry_at:
                codes = frozenset(code for code in row.refusal_codes.split(",") if code)
                self.stop_refusals[row.bot_id] = Refusals(
                    row.refusal_state, row.refusals, row.refused_at, row.retry_at, codes
                )
            if (
                row.asked_intent_id is not None
                and row.position_id is not None
                and row.sequence is not None
                and row.size is not None
                and row.stop_price is not None
                and row.limit_price is not None
            ):
                order = StopOrder(row.size, row.stop_price, row.limit_price)
                self.stop_orders[row.bot_id] = ExchangeStop(
                    row.asked_intent_id, row.position_id, row.sequence, order,
                    row.status or "asked",
                )  # fmt: skip

    def stop_resting(self, bot_id: str) -> str | None:
        """Why the bot may not be removed because of its stop on the exchange, or None: the
        executor holds it (placed or being placed, not final). A removed bot's stop would rest on
        with nobody to follow it (re-size it, cancel it before another sell, book it as the
        bot's): cancelling it is the operator's decision, so removal says how."""
        stop = self.stop_orders.get(bot_id)
        if stop is None or stop.status == "asked" or stop.status in FINAL_ORDER_STATUSES:
            return None
        return (
            f"bot {bot_id}'s protective stop {stop.intent_id} is {stop.status} on the exchange "
            f"(sell {stop.order.size} if the price falls to {stop.order.stop_price}): cancel it "
            f"first with `tranche halt {bot_id} --cancel-stops`, then remove the bot"
        )

    def asked_stop(self, bot_id: str, running: RunningBot) -> AskedStop | None:
        """The bot's stop as this service judges it (``GET /stops``): the stop its open position
        asks for, or why it asks for none; ``None`` for a bot without ``stop_on_exchange`` or
        without an open position."""
        bot = running.config
        position = self.positions.get(bot_id)
        if not bot.stop_on_exchange or position is None or position.status != "open":
            return None
        reason = self.stop_reasons.get(bot_id)
        product = self.products.get(bot.product_id)
        wanted = desired_stop(bot, position, product) if product is not None else None
        asking = (
            reason is not None
            and reason.code == STOP_ON_EXCHANGE
            and bot_id in self.stops_asked
            and isinstance(wanted, StopOrder)
        )
        if not asking or not isinstance(wanted, StopOrder):
            return AskedStop(
                bot_id=bot_id, product_id=bot.product_id, holding=position.quantity, reason=reason
            )
        return AskedStop(
            bot_id=bot_id,
            product_id=bot.product_id,
            holding=position.quantity,
            wanted_size=wanted.size,
            stop_price=wanted.stop_price,
            limit_price=wanted.limit_price,
            intent_id=self.stops_asked[bot_id],
            reason=reason,
        )

    async def stop_refused(self, rejected: OrderRejected) -> None:
        """Safety refused the stop asked for this state of the position: most often the entry
        that opened it is not final yet in safety's view (``ORDER_IN_FLIGHT``). It is asked again
        under the next attempt's id, on the next tick, position or readiness after its back-off
        (none the first time, then 5, 10, 20, 40, 60 s of event time); the signal service's own
        stop-loss protects the position meanwhile."""
        intent = rejected.intent
        if not is_stop_intent(intent.intent_id) or self.stops_asked.get(intent.bot_id) != (
            intent.intent_id
        ):
            return
        state, _ = self.stop_attempts.get(intent.bot_id, ("", 0))
        earlier = self.stop_refusals.get(intent.bot_id)
        refusals = earlier.count + 1 if earlier is not None and earlier.state == state else 1
        at = intent.market_time or intent.time
        why = frozenset(reason.code for reason in rejected.reasons)
        self.stop_refusals[intent.bot_id] = Refusals(
            state, refusals, at, at + backoff_after(refusals - 1), why
        )
        self.stops_asked.pop(intent.bot_id, None)
        self.stop_orders.pop(intent.bot_id, None)
        await self.transact(self.stop_saved(intent.bot_id))
        codes = ", ".join(sorted(why))
        self.stop_reasons[intent.bot_id] = Reason(
            code="STOP_REFUSED",
            message=f"safety refused the stop ({codes}); it is asked again "
            f"(refusal {refusals} for this state of the position)",
        )
        self.log.warning("stop.refused", bot_id=intent.bot_id, reasons=codes, refusals=refusals)
        running = self.bots.get(intent.bot_id)
        if running is not None and refusals == 1:
            await self.keep_stop(intent.bot_id, running, now_clear=True)  # once, at once

    async def stop_again(self, bot_id: str, judged_at: datetime) -> None:
        """Safety says the bot has no order in flight (its readiness, heard as a plain message,
        judged at ``judged_at`` in event time): a stop it refused only for one, at or before that
        instant, is asked now, whatever the back-off. Event times only: a readiness that safety
        judged before the refusal clears nothing."""
        running, refused = self.bots.get(bot_id), self.stop_refusals.get(bot_id)
        if running is None or refused is None or bot_id in self.stops_asked:
            return
        clear = refused.reasons <= IN_FLIGHT_REFUSALS and judged_at >= refused.at
        await self.keep_stop(bot_id, running, now_clear=clear)

    async def stop_event(self, event: OrderEvent) -> None:
        """An order event of the stop last asked: its status is kept (the signal's stop-loss
        stands down while the exchange holds the stop), and a stop that ended without being meant
        to is asked again (:meth:`stop_ended`). Idempotent: the same event changes nothing twice."""
        await self._stop_event(event)
        if self.on_stop is not None and is_stop_intent(event.intent_id):
            self.on_stop(event)

    async def _stop_event(self, event: OrderEvent) -> None:
        known = self.stop_orders.get(event.bot_id)
        if known is None or known.intent_id != event.intent_id:
            return
        heard = known.heard(event.status)
        if heard != known:
            self.stop_orders[event.bot_id] = heard
            self.log.info("stop.status", bot_id=event.bot_id, intent_id=event.intent_id,
                          status=heard.status)  # fmt: skip
        await self.stop_ended(event)
        if heard != known:
            await self.transact(self.stop_saved(event.bot_id))

    async def stop_ended(self, event: OrderEvent) -> None:
        """An order event of a stop: one that ended without being meant to (refused by the
        exchange, cancelled from outside) is asked again for the same state of the position, up
        to :data:`~services.signal.exchange_stop.MAX_ATTEMPTS`; meanwhile, and after, the signal
        service's own stop-loss protects the position."""
        if not is_stop_intent(event.intent_id) or self.stops_asked.get(event.bot_id) != (
            event.intent_id
        ):
            return
        state, attempts = self.stop_attempts.get(event.bot_id, ("", 0))
        code = event.reason.code if event.reason else None
        if not asks_again(event.status, code, attempts + 1):
            if event.status in ("cancelled", "expired", "failed"):
                self.stop_reasons[event.bot_id] = ended_reason(event.status, code, attempts + 1)
            return
        self.stop_attempts[event.bot_id] = (state, attempts + 1)
        self.stops_asked.pop(event.bot_id, None)
        self.stop_orders.pop(event.bot_id, None)
        await self.transact(self.stop_saved(event.bot_id))
        self.log.warning("stop.ended", bot_id=event.bot_id, status=event.status, code=code)
        running = self.bots.get(event.bot_id)
        if running is not None:
            await self.keep_stop(event.bot_id, running)

    async def confirm(
        self,
        bot_id: str,
        running: RunningBot,
        side: Side | Literal["hold"],
        temperature: Decimal,
        time: datetime,
        signal_id: str,
        source: str,
        score: Decimal | None,
        skip_confirmation: bool = False,
        position_wait_s: float = 0.0,
    ) -> None:
        """Feed the bot's confirmation; act when it fires; publish the evaluation either way."""
        band, progress = confirmation_of(running, side, temperature, time)
        verdict = Verdict(bot_id, side, temperature, score, band, time, progress)
        await self.confirmed(running, verdict, signal_id, source, skip_confirmation,
                             position_wait_s)  # fmt: skip

    async def confirmed(
        self,
        running: RunningBot,
        verdict: Verdict,
        signal_id: str,
        source: str,
        skip_confirmation: bool = False,
        position_wait_s: float = 0.0,
    ) -> None:
        """What follows a step of the bot's confirmation (``verdict``): act when it fires;
        publish the evaluation either way."""
        bot_id, side, temperature, time = (
            verdict.bot_id, verdict.direction, verdict.temperature, verdict.end,
        )  # fmt: skip
        band, progress, score = verdict.band, verdict.progress, verdict.score
        running.runtime.temperature = temperature
        intent = None
        if side != "hold" and (progress.fires or skip_confirmation):
            intent = await self.act(bot_id, running, side, temperature, signal_id, time, source,
                                    position_wait_s=position_wait_s)  # fmt: skip
        self.evaluated += 1
        if self.publish_evaluation is None:
            return
        held = progress.held_for(time).total_seconds()
        await self.publish_evaluation(
            SignalEvaluation(
                bot_id=bot_id,
                product_id=running.config.product_id,
                time=time,
                direction=side,
                temperature=temperature,
                band=band,
                score=score,
                confirmations=progress.count,
                confirmations_needed=progress.needed,
                confirming_since=progress.since,
                confirm_seconds=int(running.runtime.confirmation.hold.total_seconds()),
                intent_id=intent.intent_id if intent else None,
                reason=Reason(
                    code="CONFIRMED" if progress.fires or skip_confirmation else "EVALUATED",
                    message=(
                        f"{source}: {side} at temperature {temperature}, {progress.count} of "
                        f"{progress.needed} evaluations over {held:g} s"
                    ),
                ),
            )
        )

    # -- standing exits ---------------------------------------------------------------------------

    def trigger_of(self, bot_id: str, running: RunningBot, tick: Ticker) -> Reason | None:
        """What asks this bot to exit at this tick: a flatten first, then a protective exit."""
        position = self.positions.get(bot_id)
        if not holds(position):
            return None
        assert position is not None and position.position_id is not None
        runtime = running.runtime
        known = runtime.highest.get(position.position_id)
        if known is None:  # after a restart: the mark kept (for this position) goes on
            kept_position, kept_high = self.highs_kept.get(bot_id, (None, None))
            known = kept_high if kept_position == position.position_id else None
        high = max(known or tick.price, tick.price)
        runtime.highest[position.position_id] = high
        if bot_id in self.flattening:
            return flatten_reason(self.flattening[bot_id])
        return protective_exit(running.config, position, tick.price, high)

    async def protect(self, bot_id: str, running: RunningBot, tick: Ticker) -> None:
        """Stop-loss, take-profit, trailing stop and flatten: standing orders, asked on every
        tick (paused or not) while the trigger holds, backing off in event time."""
        trigger = self.trigger_of(bot_id, running, tick)
        position = self.positions.get(bot_id)
        await self.keep_high(bot_id, running, position)
        if stands_down(trigger, position, self.stop_orders.get(bot_id), tick.price):
            trigger = None  # the exchange's stop acts (services/signal/exchange_stop.py)
        signal_id = self.standing.ask(bot_id, position, trigger, tick.time)
        if signal_id is None or trigger is None:
            return
        await self.act(bot_id, running, "sell", running.runtime.temperature, signal_id,
                       tick.time, trigger.code, protective=trigger)  # fmt: skip

    async def keep_high(
        self, bot_id: str, running: RunningBot, position: PositionUpdate | None
    ) -> None:
        """Store a trailing stop's mark when it rose, so that a restart goes on from it."""
        if running.config.trailing_stop_pct is None or position is None:
            return
        position_id = position.position_id
        high = running.runtime.highest.get(position_id) if position_id else None
        if (
            position_id is None
            or high is None
            or self.highs_kept.get(bot_id) == (position_id, high)
        ):
            return
        self.highs_kept[bot_id] = (position_id, high)
        await self.transact(lambda session: save_high(session, bot_id, position_id, high))

    async def load_highs(self) -> None:
        """The trailing stops' marks kept before a restart."""
        self.highs_kept.update(await self.transact(highs))

    def take_price(self, tick: Ticker) -> bool:
        """Keep the tick's price as the product's newest; False when the tick is older than the
        price already known (it changes nothing, and no strategy sees it)."""
        known = self.markets.get(tick.product_id)
        if known is not None and tick.time < known.time:
            return False  # an older tick never replaces a newer price
        self.markets[tick.product_id] = Market(price=tick.price, time=tick.time)
        return True

    async def evaluate_tick(self, tick: Ticker) -> bool:
        """One ticker: the newest price, standing exits, then each bot's candle and strategy.
        False when the tick is older than the price already known (it changes nothing)."""
        if not self.take_price(tick):
            return False
        await self.follow(tick, judge(self.bots, tick))
        return True

    async def follow(self, tick: Ticker, verdicts: list[Verdict]) -> None:
        """A tick's price kept (:meth:`take_price`), what follows it for each bot trading the
        product, in the bots' order: its stop on the exchange, its standing exits, then its
        strategy's verdict on the candle the tick closed, if any (``verdicts``, from
        :func:`judge` on the same tick: the strategy reads nothing that follows changes)."""
        said = {verdict.bot_id: verdict for verdict in verdicts}
        for bot_id, running in self.bots.trading(tick.product_id):
            if running.config.stop_on_exchange:
                await self.keep_stop(bot_id, running)
            await self.protect(bot_id, running, tick)
            verdict = said.get(bot_id)
            if verdict is None:
                continue
            signal_id = f"candle:{bot_id}:{verdict.end.isoformat()}"
            await self.confirmed(running, verdict, signal_id, "signals")

    # -- positions and flatten --------------------------------------------------------------------

    async def newer_position(self, bot_id: str, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the next position of the bot; True when one came."""
        changed = self._position_changed.setdefault(bot_id, asyncio.Event())
        changed.clear()
        try:
            await asyncio.wait_for(changed.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def keep_position(self, position: PositionUpdate) -> bool:
        """Keep the newest position of each bot; a flat one ends its flatten. True when kept."""
        known = self.positions.get(position.bot_id)
        if not (
            known is None or known.mode != position.mode or position.sequence >= known.sequence
        ):
            return False
        self.positions[position.bot_id] = position
        running = self.bots.get(position.bot_id)
        if running is not None:
            await self.keep_stop(position.bot_id, running)
        if position.bot_id in self._position_changed:
            self._position_changed[position.bot_id].set()
        if position.bot_id in self.flattening:
            if holds(position):
                # A flatten is asked again when the position changes, ticks or not.
                await self.ask_at_newest_price(position.bot_id)
            else:
                await self.flatten_done(position.bot_id, "the position is flat")
        return True

    async def safety_event(self, event: SafetyEvent) -> bool:
        """A safety event, as the service hears it (signed: app.py) and the backtest hands it:
        a flatten stands until flat; a resume ends it and restarts standing exits' back-off (a
        resume of the whole system restarts every bot's; flattens stand). Once per event id:
        True when it was acted on now, False for any other event or one acted on before."""
        if event.code not in ("FLATTEN_REQUESTED", "RESUME"):
            return False
        if event.bot_id is None:
            if event.code != "RESUME":
                return False
            if not await self.transact(
                lambda session: first_time(session, event.message_id, None, event.code)
            ):
                return False
            self.standing.forget_all()
            return True
        if event.code == "FLATTEN_REQUESTED":
            return await self.flatten_requested(event.bot_id, event.message, event.message_id)
        return await self.resumed(event.bot_id, event.message_id)

    async def flatten_requested(self, bot_id: str, reason: str, event_id: str) -> bool:
        """An operator asked to flatten the bot: exit at every tick until flat (or resumed).
        Once per request: the same one again (``event_id``) changes nothing (False)."""

        def change(session: Session) -> bool:
            if not first_time(session, event_id, bot_id, "FLATTEN_REQUESTED"):
                return False
            if session.get(FlattenRecord, bot_id) is None:
                session.add(FlattenRecord(bot_id=bot_id, reason=reason[:500], event_id=event_id))
            return True

        if not await self.transact(change):
            self.log.info("flatten.seen_before", bot_id=bot_id, event_id=event_id)
            return False
        self.flattening[bot_id] = reason
        self.standing.forget(bot_id)
        self.log.info("flatten.standing", bot_id=bot_id, reason=reason)
        await self.ask_at_newest_price(bot_id)
        return True

    async def ask_at_newest_price(self, bot_id: str) -> None:
        """Evaluate the bot's standing exits at the newest price (a flatten is asked at once,
        not only at the next tick); nothing without a price."""
        running = self.bots.get(bot_id)
        market = self.markets.get(running.config.product_id) if running else None
        if running is not None and market is not None:
            now = Ticker(product_id=running.config.product_id, price=market.price, time=market.time)
            await self.protect(bot_id, running, now)

    async def resumed(self, bot_id: str, event_id: str | None = None) -> bool:
        """Safety resumed the bot: a flatten ends, and a standing exit's back-off starts again
        (its attempts were refused by the halt, not by the market), so a position still past its
        stop is asked at the next evaluation instead of after up to a minute. Once per resume
        (``event_id``): the same one again changes nothing (False)."""

        def claim(session: Session) -> bool:
            return event_id is None or first_time(session, event_id, bot_id, "RESUME")

        if bot_id in self.flattening:
            if not await self.flatten_done(bot_id, "the bot was resumed", claim):
                return False
        elif not await self.transact(claim):
            return False
        self.standing.forget(bot_id)
        return True

    async def flatten_done(
        self, bot_id: str, why: str, claim: Callable[[Session], bool] | None = None
    ) -> bool:
        """The flatten ends (and ``claim`` is noted in the same transaction: a resume ends it
        once, and never leaves it stored for a restart to take up again)."""

        def change(session: Session) -> bool:
            if claim is not None and not claim(session):
                return False
            found = session.get(FlattenRecord, bot_id)
            if found is not None:
                session.delete(found)
            return True

        if not await self.transact(change):
            return False
        self.flattening.pop(bot_id, None)
        self.standing.forget(bot_id)
        self.log.info("flatten.ended", bot_id=bot_id, why=why)
        return True

    async def load_flattens(self) -> None:
        """The flattens asked before a restart stand again."""
        self.flattening.update(await self.transact(flattens))
