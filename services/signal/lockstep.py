"""Lock-step replay: the feed publishes a tick, waits until the signal service has evaluated it
and every intent made so far has settled (:mod:`services.signal.settle`), then publishes the next.

It follows the pipeline from inside the signal process, on what is public anyway: safety's
decisions and the executor's order events (ordered JetStream consumers of ``TRANCHE_ORDERS``,
new messages only, so each event comes with its stream sequence), the signal's own position view,
and the progress of safety's durable order-event consumer (``consumer_info``: the one thing no
message announces, polled only while that is all an intent still waits for).

Every wait is on an event, bounded by ``timeout_s`` per intent: an intent that does not settle
in time fails the replay with its id and what it waited for, rather than letting the replay go on
and quietly decide differently.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from services.signal.settle import SettleTracker
from shared import subjects
from shared.contracts import (
    OrderApproved,
    OrderEvent,
    OrderRejected,
    PositionUpdate,
    Ticker,
    TradeIntent,
)
from shared.logging import get_logger
from shared.streams import ORDERS, SAFETY_ORDER_EVENTS

log = get_logger(__name__)

POLL_FIRST_S = 0.002
POLL_MAX_S = 0.05


class SettleTimeout(Exception):
    """An intent (or a tick) did not settle in time: the replay stops, saying which and why."""


class Lockstep:
    def __init__(
        self,
        nc: Callable[[], NatsClient | None],
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._nc = nc
        self.timeout_s = timeout_s
        self._clock = clock
        self.tracker = SettleTracker()
        self._changed = asyncio.Event()
        self._ticked: Counter[Ticker] = Counter()
        self.intents = 0
        self.evaluate_s = 0.0
        """Wall seconds the feed waited for the signal to evaluate its ticks (the feed's status)."""
        self.settle_s = 0.0
        """Wall seconds the feed waited for intents to settle."""

    # -- wiring ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Follow decisions and order events from now on (before the feed publishes anything)."""
        nc = self._nc()
        assert nc is not None
        js = nc.jetstream()
        for family, handler in (
            (subjects.ORDERS_APPROVED, self._on_approved),
            (subjects.ORDERS_REJECTED, self._on_rejected),
            (subjects.ORDERS_EVENTS, self._on_order_event),
        ):
            await js.subscribe(
                subjects.all_of(family),
                stream=ORDERS.name,
                cb=handler,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.NEW,
            )

    # -- facts from the signal service itself ----------------------------------------------------

    def created(self, intent_id: str, bot_id: str) -> None:
        self.intents += 1
        self.tracker.created(intent_id, bot_id, self._clock())
        self._changed.set()

    def stop_told(self, fact: TradeIntent | OrderEvent) -> None:
        """The signal asked a protective stop (an intent: the replay waits until it has heard it
        rest or end), or has handled an order event of one (its view is up to date)."""
        if isinstance(fact, TradeIntent):
            self.tracker.created(fact.intent_id, fact.bot_id, self._clock(), stop=True)
        else:
            self.tracker.stop_heard(fact.intent_id, fact.status)
        self._changed.set()

    def position(self, position: PositionUpdate) -> None:
        self.tracker.position(position.bot_id, position.mode, position.sequence)
        self._changed.set()

    def ticked(self, tick: Ticker) -> None:
        """The signal's ticker handler is done with ``tick`` (whatever it made of it)."""
        self._ticked[tick] += 1
        self._changed.set()

    # -- facts from NATS --------------------------------------------------------------------------

    async def _on_approved(self, msg: Msg) -> None:
        with contextlib.suppress(ValidationError):
            self.tracker.decided(OrderApproved.model_validate_json(msg.data).intent.intent_id, True)
            self._changed.set()

    async def _on_rejected(self, msg: Msg) -> None:
        with contextlib.suppress(ValidationError):
            decision = OrderRejected.model_validate_json(msg.data)
            self.tracker.decided(decision.intent.intent_id, False)
            self._changed.set()

    async def _on_order_event(self, msg: Msg) -> None:
        with contextlib.suppress(ValidationError):
            event = OrderEvent.model_validate_json(msg.data)
            self.tracker.order_event(
                event.intent_id,
                event.bot_id,
                event.mode,
                event.status,
                [fill.trade_id for fill in event.fills],
                msg.metadata.sequence.stream,
                event.message_id,
            )
            self._changed.set()

    async def before_position(self, position: PositionUpdate) -> None:
        """Return once safety has recorded the order event ``position`` was booked from (as in
        the backtest, where safety records an order event before the ledger books it): a stop
        the position asks at once is then decided as the backtest decides it, not refused as
        an order still in flight (``ORDER_IN_FLIGHT``) and asked again under another id because
        the ledger was quicker than safety. Polls; never clears the barrier's event. After
        ``timeout_s`` it returns anyway: the barrier then says what is stuck."""
        started, poll = self._clock(), POLL_FIRST_S
        while True:
            waits = self.tracker.position_waits_for(position.bot_id, position.last_order_event_id)
            if waits == "safety":
                await self._ask_safety()
                waits = self.tracker.position_waits_for(
                    position.bot_id, position.last_order_event_id
                )
            if waits is None:
                return
            if self._clock() - started > self.timeout_s:
                log.warning("lockstep.position_early", bot_id=position.bot_id, waits_for=waits)
                return
            await asyncio.sleep(poll)
            poll = min(poll * 2, POLL_MAX_S)

    async def _ask_safety(self) -> None:
        """How far safety's durable order-event consumer has acknowledged the stream."""
        nc = self._nc()
        assert nc is not None
        try:
            info = await nc.jetstream().consumer_info(ORDERS.name, SAFETY_ORDER_EVENTS.durable)
        except NotFoundError:
            return  # safety has not started consuming: the intent waits (and times out)
        delivered, floor = info.delivered.stream_seq, info.ack_floor.stream_seq
        self.tracker.consumed((delivered if info.num_ack_pending == 0 else floor) or 0)

    # -- the barrier -----------------------------------------------------------------------------

    async def after_tick(self, tick: Ticker) -> None:
        """Return once ``tick`` is evaluated and every intent so far has settled; raise
        :class:`SettleTimeout` when one takes longer than ``timeout_s``."""
        started = self._clock()
        while self._ticked[tick] == 0:
            self._changed.clear()
            if self._clock() - started > self.timeout_s:
                raise SettleTimeout(
                    f"the signal service did not evaluate the {tick.product_id} tick at "
                    f"{tick.time.isoformat()} within {self.timeout_s:g} s"
                )
            await self._wait(self.timeout_s)
        self._ticked[tick] -= 1
        if self._ticked[tick] == 0:
            del self._ticked[tick]
        evaluated = self._clock()
        self.evaluate_s += evaluated - started
        await self._settle()
        self.settle_s += self._clock() - evaluated

    async def _settle(self) -> None:
        poll = POLL_FIRST_S
        while True:
            self._changed.clear()
            waiting = self.tracker.unsettled()
            if not waiting:
                return
            late = self.tracker.overdue(self._clock(), self.timeout_s)
            if late is not None:
                raise SettleTimeout(
                    f"lock-step replay stopped: {late.describe()} for more than "
                    f"{self.timeout_s:g} s (TRANCHE_REPLAY_SETTLE_TIMEOUT_S)"
                )
            if all(item.waiting_for == "safety" for item in waiting):
                await self._ask_safety()
                if not self.tracker.unsettled():
                    return
                await self._wait(poll)  # nothing announces safety's progress: ask again soon
                poll = min(poll * 2, POLL_MAX_S)
            else:
                # An event wakes it; the timeout only re-checks for an overdue intent.
                await self._wait(min(1.0, self.timeout_s))

    async def _wait(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)
