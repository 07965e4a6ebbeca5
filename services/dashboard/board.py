"""The board: everything a trader watches, built from the public messages alone.

Pure (subject and bytes in, state out, no I/O), so it is tested without NATS. The web dashboard
and the terminal view of ``tranche up`` (``tranche/live.py``) both read it: one aggregation.

No business rules live here: the board shows what the services published (a safety event says a
bot is halted; the board never decides it). The one sum it makes is the unrealized P&L,
quantity × latest ticker price − cost basis, marked at a price the market data carried.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from pydantic import BaseModel

from shared import contracts as c
from shared import subjects as s
from shared.eventtime import MOCK_BOUNDS, refuse_time
from shared.money import MAX_DIGITS, format_decimal
from shared.stops import StopState

FEED_SIZE = 12
CHART_POINTS = 2000
"""Price points kept per product (one a second of event time at most)."""
CHART_MARKERS = 200
"""Entry and exit marks kept per product."""
# P&L is in the quote currency: cents for fiat-like quotes, 8 places for a crypto quote (ETH-BTC).
_FIAT = frozenset({"USD", "USDC", "USDT", "EUR", "GBP"})
# Products of two 38-digit decimals must not be rounded by the default 28-digit context.
_PREC = 4 * MAX_DIGITS
_FAMILIES: dict[str, type[BaseModel]] = {
    s.MARKET_TICKER: c.Ticker,
    s.SIGNALS_INJECT: c.InjectedSignal,
    s.SIGNALS_EVALUATED: c.SignalEvaluation,
    s.INTENTS: c.TradeIntent,
    s.ORDERS_APPROVED: c.OrderApproved,
    s.ORDERS_REJECTED: c.OrderRejected,
    s.ORDERS_EVENTS: c.OrderEvent,
    s.LEDGER_POSITIONS: c.PositionUpdate,
    s.DLQ: c.DeadLetter,
    s.SAFETY_READINESS: c.BotReadiness,
}

_REQUESTS = (s.SAFETY_CONTROL, s.LEDGER_QUERY)
"""Requests to a service (the operator's commands, ledger queries), not facts to show: seen,
never counted as invalid."""

Decision = c.OrderApproved | c.OrderRejected
DLQ_REPLAYS = f"{s.DLQ}.replays"


@dataclass(frozen=True)
class StateReason:
    """Why a trading state is what it is, as safety said it (an event, or its ``/states``)."""

    code: str
    message: str
    caused_by: str

    def sentence(self) -> str:
        """``CODE: message (by who)``, leaving out what safety did not say (an active state read
        from ``/states`` has no code, message or author)."""
        text = ": ".join(part for part in (self.code, self.message) if part)
        if text and self.caused_by:
            text += f" (by {self.caused_by})"
        return text


@dataclass
class BotView:
    """One bot: what it last thought, holds and has in flight, and what safety said of it."""

    bot_id: str
    product_id: str | None = None
    mode: c.Mode | None = None
    trading_state: str | None = None
    state_reason: StateReason | None = None
    """What safety said when it set ``trading_state``."""
    evaluation: c.SignalEvaluation | None = None
    position: c.PositionUpdate | None = None
    open_order: c.OrderApproved | c.OrderEvent | None = None
    """Approved and not final yet; ``None`` once the bot's last order ended."""
    last_decision: Decision | None = None
    """The bot's latest approval or rejection (a rejection says why it did not trade)."""
    readiness: c.BotReadiness | None = None
    """Safety's latest word on whether the bot could trade now."""
    bot_status: str | None = None
    """``active``, ``paused`` or ``removed`` as the last ``tranche.bots.changed`` said."""
    bot_revision: int = 0
    exchange_stop: StopState | None = None
    """Its stop on the exchange, or why none, as the signal service and the executor last said
    (``None``: the bot keeps no stop there, or holds nothing)."""


@dataclass(frozen=True)
class ReadinessNow:
    """Safety's readiness as of the newest event time the board has seen for the bot's product:
    a block safety said lifts at a time already passed (a cooldown) is no longer in force."""

    judged_at: datetime
    now: datetime
    can_enter: bool
    entry_blocks: tuple[c.ReadinessBlock, ...]
    can_exit: bool
    exit_blocks: tuple[c.ReadinessBlock, ...]
    entry_cooldown_until: datetime | None
    exit_cooldown_until: datetime | None

    @property
    def entry_cooldown_left(self) -> timedelta | None:
        return None if self.entry_cooldown_until is None else self.entry_cooldown_until - self.now

    @property
    def exit_cooldown_left(self) -> timedelta | None:
        return None if self.exit_cooldown_until is None else self.exit_cooldown_until - self.now


def _in_force(blocks: list[c.ReadinessBlock], now: datetime) -> tuple[c.ReadinessBlock, ...]:
    return tuple(b for b in blocks if b.until is None or b.until > now)


def _pending(until: datetime | None, now: datetime) -> datetime | None:
    return until if until is not None and until > now else None


@dataclass(frozen=True)
class PricePoint:
    """One point of a product's price line; ``time`` is event time in whole UTC seconds."""

    seq: int
    time: int
    price: Decimal


@dataclass(frozen=True)
class TradeMark:
    """A fill on the chart: an entry or add (buy) or an exit (sell) at its price and time."""

    seq: int
    time: int
    price: Decimal
    size: Decimal
    side: str
    action: str
    bot_id: str


ChartNews = tuple[dict[str, list[PricePoint]], dict[str, list[TradeMark]]]
"""New price points and new trade marks, per product."""


def _remember(ids: dict[str, None], item: str, limit: int = 4096) -> bool:
    """Whether ``item`` was seen; a dict keeps insertion order, so the oldest is forgotten first."""
    if item in ids:
        return True
    ids[item] = None
    if len(ids) > limit:
        del ids[next(iter(ids))]
    return False


def _seconds(at: datetime) -> int:
    return int(at.timestamp())


class Board:
    """Everything the views show, built from messages alone. :meth:`apply` never raises.

    ``version`` grows with every message that changed something, so a view redraws only then;
    chart points and marks carry a growing ``seq`` so a view sends only what is new to it.
    """

    def __init__(self, feed_size: int = FEED_SIZE, chart_points: int = CHART_POINTS) -> None:
        self.bots: dict[str, BotView] = {}
        self.prices: dict[str, Decimal] = {}
        """Latest ticker price per product."""
        self.price_times: dict[str, datetime] = {}
        """Event time of the newest ticker per product."""
        self.decisions: deque[Decision] = deque(maxlen=feed_size)
        self.orders: deque[c.OrderEvent] = deque(maxlen=feed_size)
        self.dead_letters: deque[c.DeadLetter] = deque(maxlen=feed_size)
        self.safety_events: deque[c.SafetyEvent] = deque(maxlen=feed_size)
        self.charts: dict[str, deque[PricePoint]] = {}
        self.marks: dict[str, deque[TradeMark]] = {}
        self.system_state: str | None = None
        self.system_reason: StateReason | None = None
        self.messages_seen = 0
        self.invalid_messages = 0
        self.duplicates = 0
        self.last_invalid: str | None = None
        self.stops_unread: tuple[str, ...] = ()
        """The services whose ``GET /stops`` could not be read last time (the stops shown are
        the ones read before)."""
        self.version = 0
        self.chart_seq = 0
        self._chart_points = chart_points
        # A core subscription also sees re-publishes that JetStream dropped by Nats-Msg-Id.
        self._seen: dict[str, None] = {}
        self._finished: dict[str, None] = {}

    @property
    def modes(self) -> set[str]:
        """The modes the messages carried (``{"mock"}``, ``{"production"}``, both or none)."""
        return {bot.mode for bot in self.bots.values() if bot.mode}

    def apply(self, subject: str, payload: bytes) -> None:
        """Take one message; an unknown subject or invalid payload is counted, never raised."""
        self.messages_seen += 1
        self.version += 1
        try:
            self._apply(subject, payload)
        except Exception as exc:  # a viewer must outlive any message, even one that hits a bug
            self.invalid_messages += 1
            self.last_invalid = f"{subject}: {str(exc).splitlines()[0][:120]}"

    def know_state(
        self, bot_id: str | None, state: str, reason: StateReason, newest: bool = False
    ) -> None:
        """A trading state read from safety (``None``: the whole system). At start a safety
        event seen since is newer and stays; ``newest``: read after a reconnect, it is newer than
        what the board holds (the events of the cut were never delivered) and wins."""
        self.version += 1
        if bot_id is None:
            if self.system_state is None or newest:
                self.system_state, self.system_reason = state, reason
            return
        bot = self.bots.setdefault(bot_id, BotView(bot_id))
        if bot.trading_state is None or newest:
            bot.trading_state, bot.state_reason = state, reason

    def know_position(self, position: c.PositionUpdate) -> None:
        """A position read from the ledger at start; the newer book (by ``sequence``) stays."""
        self.version += 1
        self._take(position.bot_id, position)

    def holdings(self) -> dict[str, Decimal]:
        """Each bot's open quantity (a live stop is measured against it)."""
        return {
            bot_id: bot.position.quantity
            for bot_id, bot in self.bots.items()
            if bot.position is not None and bot.position.status == "open"
        }

    def know_stops(self, states: Mapping[str, StopState], unread: Sequence[str]) -> bool:
        """Each bot's stop on the exchange, read from the services every few seconds; when one
        of them could not be read, the stops read before stay (and the view says they may be
        old). A bot not on the board yet is left out: it shows once it has published. Whether
        anything changed."""
        changed = tuple(unread) != self.stops_unread
        self.stops_unread = tuple(unread)
        if not unread:
            for bot_id, bot in self.bots.items():
                state = states.get(bot_id)
                if state != bot.exchange_stop:
                    bot.exchange_stop, changed = state, True
        if changed:
            self.version += 1
        return changed

    def know_readiness(self, readiness: c.BotReadiness) -> None:
        """A readiness read from safety at start; a newer one seen since stays."""
        self.version += 1
        self._readiness(readiness)

    def readiness_now(self, bot_id: str) -> ReadinessNow | None:
        """The bot's readiness at the newest event time seen (``None``: safety has not said)."""
        bot = self.bots.get(bot_id)
        ready = bot.readiness if bot else None
        if ready is None:
            return None
        now = max(ready.time, self.price_times.get(ready.product_id or "", ready.time))
        entry, exit_ = _in_force(ready.entry_blocks, now), _in_force(ready.exit_blocks, now)
        return ReadinessNow(
            judged_at=ready.time,
            now=now,
            can_enter=not entry,
            entry_blocks=entry,
            can_exit=not exit_,
            exit_blocks=exit_,
            entry_cooldown_until=_pending(ready.entry_cooldown_until, now),
            exit_cooldown_until=_pending(ready.exit_cooldown_until, now),
        )

    def unrealized_pnl(self, bot_id: str) -> Decimal | None:
        """Quantity × latest price − cost basis, in the quote currency; ``None`` when flat or no
        price was seen yet."""
        bot = self.bots.get(bot_id)
        position = bot.position if bot else None
        if position is None or position.quantity == 0:
            return None
        price = self.prices.get(position.product_id)
        if price is None:  # no price, no mark: never a guessed one
            return None
        with localcontext(prec=_PREC):
            return position.quantity * price - position.cost_basis

    def chart_since(self, seq: int) -> ChartNews:
        """Price points and trade marks newer than ``seq``, per product, oldest first."""
        points = {
            product: [p for p in line if p.seq > seq]
            for product, line in self.charts.items()
            if line and line[-1].seq > seq
        }
        marks = {
            product: [m for m in found if m.seq > seq]
            for product, found in self.marks.items()
            if found and found[-1].seq > seq
        }
        return points, marks

    def _apply(self, subject: str, payload: bytes) -> None:
        if subject == DLQ_REPLAYS:
            return  # `tranche dlq replay`'s audit record, not a dead letter
        if any(subject == r or subject.startswith(r + ".") for r in _REQUESTS):
            return
        model: type[BaseModel] | None
        if subject == s.SAFETY_EVENTS:
            model, token = c.SafetyEvent, ""
        elif subject == s.BOTS_CHANGED:
            model, token = c.BotChanged, ""
        else:
            family, _, token = subject.rpartition(".")
            model = _FAMILIES.get(family)
            if model is None:
                raise ValueError("unknown subject")
        msg = model.model_validate_json(payload)
        message_id = getattr(msg, "message_id", None)
        # A repeat is the same id on the same subject (as JetStream drops a re-publish within its
        # stream): by id alone, a user allowed to publish on one subject (an injected signal's
        # free id) could hide the ledger's next position or a decision, whose ids are predictable.
        if message_id is not None and _remember(self._seen, f"{subject} {message_id}"):
            self.duplicates += 1
            return
        self._take(token, msg)

    def _take(self, token: str, msg: BaseModel) -> None:
        match msg:
            case c.Ticker():
                _same(token, msg.product_id)
                known = self.price_times.get(msg.product_id)
                # The services refuse such a tick; the board does not draw it either.
                jump = refuse_time(msg.time, known, None, MOCK_BOUNDS, "ticker time")
                if jump is not None:
                    raise ValueError(jump.message)
                if known is None or msg.time >= known:  # an older tick never replaces a newer
                    self.prices[msg.product_id] = msg.price  # price (the ledger marks so too)
                    self.price_times[msg.product_id] = msg.time
                self._chart_point(msg.product_id, _seconds(msg.time), msg.price)
            case c.SignalEvaluation():
                self._bot(token, msg.bot_id, msg.product_id).evaluation = msg
            case c.TradeIntent():
                self._bot(token, msg.bot_id, msg.product_id)
            case c.OrderApproved() | c.OrderRejected():
                bot = self._bot(token, msg.intent.bot_id, msg.intent.product_id, msg.mode)
                self.decisions.append(msg)
                bot.last_decision = msg
                if isinstance(msg, c.OrderApproved) and msg.client_order_id not in self._finished:
                    bot.open_order = msg
            case c.OrderEvent():
                bot = self._bot(token, msg.bot_id, msg.product_id, msg.mode)
                self.orders.append(msg)
                for fill in msg.fills:
                    self._mark(msg, fill)
                order_id = msg.client_order_id
                if msg.status in c.FINAL_ORDER_STATUSES:
                    _remember(self._finished, order_id)
                    if bot.open_order and bot.open_order.client_order_id == order_id:
                        bot.open_order = None
                elif order_id not in self._finished:
                    bot.open_order = msg
            case c.PositionUpdate():
                bot = self._bot(token, msg.bot_id, msg.product_id, msg.mode)
                # The bucket read at start and the live subject can race: keep the newer book.
                if bot.position is None or msg.sequence >= bot.position.sequence:
                    bot.position = msg
            case c.DeadLetter():
                self.dead_letters.append(msg)
            case c.SafetyEvent():
                self.safety_events.append(msg)
                reason = StateReason(msg.code, msg.message, msg.caused_by)
                if msg.state and msg.bot_id:
                    bot = self._bot(msg.bot_id)
                    bot.trading_state, bot.state_reason = msg.state, reason
                elif msg.state:
                    self.system_state, self.system_reason = msg.state, reason
            case c.BotChanged():
                bot = self._bot(msg.bot_id)
                if msg.revision >= bot.bot_revision:  # an older announcement never wins
                    bot.bot_status, bot.bot_revision = msg.status, msg.revision
            case c.BotReadiness():
                _same(token, msg.bot_id)
                self._readiness(msg)
            case c.InjectedSignal():
                pass  # its evaluation, which follows, is what the views show

    def _readiness(self, ready: c.BotReadiness) -> None:
        bot = self._bot(ready.bot_id, ready.bot_id, ready.product_id or "", ready.mode)
        if bot.readiness is None or ready.time >= bot.readiness.time:
            bot.readiness = ready

    def _bot(
        self, token: str, bot_id: str = "", product: str = "", mode: c.Mode | None = None
    ) -> BotView:
        _same(token, bot_id or token)
        bot = self.bots.setdefault(token, BotView(token))
        bot.product_id = product or bot.product_id
        if mode and bot.mode and mode != bot.mode:
            # Mock and production never mix: a bot switched to production starts flat.
            bot.position = bot.open_order = None
        bot.mode = mode or bot.mode
        return bot

    def _chart_point(self, product: str, at: int, price: Decimal) -> None:
        line = self.charts.setdefault(product, deque(maxlen=self._chart_points))
        if line and at < line[-1].time:
            return  # an older tick than the line's newest: the services ignore it too
        if line and at == line[-1].time:
            line.pop()  # one point a second: the newest price of that second stands
        self.chart_seq += 1
        line.append(PricePoint(self.chart_seq, at, price))

    def _mark(self, event: c.OrderEvent, fill: c.Fill) -> None:
        self.chart_seq += 1
        found = self.marks.setdefault(event.product_id, deque(maxlen=CHART_MARKERS))
        found.append(
            TradeMark(
                self.chart_seq,
                _seconds(fill.time),
                fill.price,
                fill.size,
                event.side,
                event.action,
                event.bot_id,
            )
        )


def _same(token: str, value: str) -> None:
    if token != value:
        raise ValueError(f"subject token {token!r} does not match payload {value!r}")


# -- figures for display: Decimal in, text out, never a float ------------------------------------


def plain(value: Decimal | None, places: int = 8) -> str:
    """A price or size in plain notation, at most ``places`` decimals (half-even); ``—`` if none."""
    if value is None:
        return "—"
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        with localcontext(prec=_PREC):
            value = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    return format_decimal(value)


def pnl(value: Decimal | None, product_id: str | None) -> tuple[str, int]:
    """P&L as signed text in the quote currency (cents for fiat quotes, 8 places for crypto
    quotes) and its sign after rounding (-1, 0, 1); ``("—", 0)`` when unknown."""
    if value is None:
        return "—", 0
    places = 2 if (product_id or "").rpartition("-")[2] in _FIAT else 8
    with localcontext(prec=_PREC):
        rounded = abs(value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN))
    if rounded and value > 0:
        return f"+{format_decimal(rounded)}", 1
    if rounded:
        return f"-{format_decimal(rounded)}", -1
    return format_decimal(rounded), 0
