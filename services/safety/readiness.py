"""Whether a bot could trade now, and if not why: safety's own ``decide`` run on probes.

:func:`assess` is pure. It asks :func:`~services.safety.rules.decide` about two probe intents, an
entry (an add when the bot holds a position) of the smallest size at the newest price, and an exit
of the whole position, and turns the reasons into :class:`~shared.contracts.ReadinessBlock`\\ s. No
rule lives here: a block is a rule's own reason, with the event time it lifts by itself when it is
a cooldown. Rules on the order's size (``SIZE_RULES``) are left to the real intent.

:class:`ReadinessPublisher` coalesces: many decisions for a bot in a burst cost one assessment and
one message, published a moment after the burst. It keeps the latest assessment per bot for
``GET /readiness``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from services.safety.rules import BotState, Limits, decide
from shared.contracts import BotReadiness, ReadinessBlock, Reason, TradeIntent

PROBE_ID = "readiness-probe"
PROBE_SIZE = Decimal("0.00000001")
SIZE_RULES = frozenset({"ORDER_TOO_SMALL", "ORDER_TOO_LARGE", "PRODUCTION_RAMP"})
"""Judged on the real order's size only: a probe has no size worth judging."""
UNKNOWN_PRODUCT = "unknown"


def _probe(
    bot_id: str, product_id: str, now: datetime, price: Decimal | None, *, exit_size: Decimal | None
) -> TradeIntent:
    buying = exit_size is None
    return TradeIntent(
        message_id=PROBE_ID,
        correlation_id=PROBE_ID,
        time=now,
        intent_id=PROBE_ID,
        signal_id=PROBE_ID,
        bot_id=bot_id,
        product_id=product_id,
        action="entry" if buying else "exit",
        side="buy" if buying else "sell",
        quote_size=PROBE_SIZE if buying else None,
        base_size=None if buying else exit_size,
        temperature=Decimal(100),
        band="hot",
        reason=Reason(code="READINESS_PROBE", message="could the bot trade now?"),
        reference_price=price,
        market_time=now if price is not None else None,
    )


def _lifts_at(since: datetime | None, cooldown: timedelta, now: datetime) -> datetime | None:
    if since is None or now - since >= cooldown:
        return None
    return since + cooldown


def _blocks(reasons: Iterable[Reason], lifts: dict[str, datetime | None]) -> list[ReadinessBlock]:
    return [
        ReadinessBlock(code=r.code, message=r.message, until=lifts.get(r.code))
        for r in reasons
        # Without a price safety cannot judge the price rules; the real intent carries one.
        if r.code not in SIZE_RULES and r.code != "NO_MARKET_DATA"
    ]


def assess(
    bot_id: str,
    product_id: str | None,
    state: BotState,
    limits: Limits,
    now: datetime,
    price: Decimal | None,
) -> BotReadiness:
    """Could ``bot_id`` enter (or add) and exit at event time ``now``? ``price`` is the newest
    price safety has seen for its product (``None``: price rules are not judged)."""
    product = product_id or UNKNOWN_PRODUCT
    position = state.position
    entry_probe = _probe(bot_id, product, now, price, exit_size=None)
    if position is not None and position.is_open:
        entry_probe = entry_probe.model_copy(update={"action": "add"})
    held = position.quantity if position is not None and position.is_open else PROBE_SIZE
    exit_probe = _probe(bot_id, product, now, price, exit_size=held)
    entry_cooldown = _lifts_at(state.last_entry_at, limits.entry_cooldown, now)
    exit_cooldown = _lifts_at(state.last_exit_at, limits.exit_cooldown, now)
    lifts = {"ENTRY_COOLDOWN": entry_cooldown, "EXIT_COOLDOWN": exit_cooldown}
    entry_blocks = _blocks(decide(entry_probe, state, limits, now).reasons, lifts)
    exit_blocks = _blocks(decide(exit_probe, state, limits, now).reasons, lifts)
    return BotReadiness(
        bot_id=bot_id,
        product_id=product_id,
        mode=state.mode,
        time=now,
        trading_state=state.trading_state,
        can_enter=not entry_blocks,
        entry_blocks=entry_blocks,
        can_exit=not exit_blocks,
        exit_blocks=exit_blocks,
        entry_cooldown_until=entry_cooldown,
        exit_cooldown_until=exit_cooldown,
        tranches=None if position is None else position.tranches,
        max_tranches=limits.max_tranches,
        orders_in_flight=state.orders_in_flight,
    )


@dataclass
class BotClock:
    """What safety last heard of a bot: its product and the newest event time."""

    product_id: str | None = None
    time: datetime | None = None

    def saw(self, product_id: str | None, at: datetime) -> None:
        self.product_id = product_id or self.product_id
        if self.time is None or at > self.time:
            self.time = at

    def now(self, market_time: datetime | None) -> datetime | None:
        """Event time now for the bot: the newer of its own news and its product's price."""
        known = [t for t in (self.time, market_time) if t is not None]
        return max(known) if known else None


class ReadinessPublisher:
    """Publishes the readiness of the bots marked since the last pass, ``delay_s`` after the
    first mark of a burst. ``assess_bots`` reads the store (one transaction for the batch);
    ``publish`` sends one message. A failed pass keeps its bots marked for the next."""

    def __init__(
        self,
        assess_bots: Callable[[set[str]], Awaitable[list[BotReadiness]]],
        publish: Callable[[BotReadiness], Awaitable[None]],
        delay_s: float = 0.2,
    ) -> None:
        self._assess_bots = assess_bots
        self._publish = publish
        self._delay_s = delay_s
        self._marked: set[str] = set()
        self._wake = asyncio.Event()
        self.latest: dict[str, BotReadiness] = {}
        self.known: set[str] = set()

    def mark(self, *bot_ids: str) -> None:
        for bot_id in bot_ids:
            self._marked.add(bot_id)
            self.known.add(bot_id)
        if bot_ids:
            self._wake.set()

    def mark_all(self) -> None:
        """After a change to every bot (a system halt or resume, a mode switch)."""
        self.mark(*self.known)

    async def publish_marked(self) -> int:
        """One pass: assess and publish the marked bots; returns how many were published."""
        batch, self._marked = self._marked, set()
        if not batch:
            return 0
        try:
            found = await self._assess_bots(batch)
            for readiness in found:
                await self._publish(readiness)
                self.latest[readiness.bot_id] = readiness
        except BaseException:
            self._marked |= batch  # retried on the next pass
            raise
        return len(found)

    async def run(self, on_error: Callable[[Exception], None]) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._delay_s)
            self._wake.clear()
            try:
                await self.publish_marked()
            except Exception as error:  # the store or NATS is away: try again later
                on_error(error)
                await asyncio.sleep(1.0)
                self._wake.set()
