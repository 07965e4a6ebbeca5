"""The live terminal view of ``tranche up``: bots, signals, decisions, orders and positions.

Reading never changes anything (DESIGN.md, promise 8): the view is a core-NATS subscription to
``tranche.>``, which sees every publish (JetStream ones included) without creating a stream
consumer, plus a one-off read of the ``tranche_positions`` bucket so open positions show at once.

:class:`LiveState` is pure (subject and bytes in, state out) so it is tested without NATS;
:func:`render` turns it into rich tables; :func:`run_live` wires both to a NATS connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import nats
import nats.errors
from pydantic import BaseModel
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from shared import contracts as c
from shared import subjects as s
from shared.money import MAX_DIGITS, format_decimal

FEED_SIZE = 12
ALERTS = 3  # dead letters and safety events shown under the header
PRODUCTION_STYLE = "bold red reverse"
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
}

Decision = c.OrderApproved | c.OrderRejected


@dataclass
class BotView:
    """One row of the bots table: what the bot last thought, holds and has in flight."""

    bot_id: str
    product_id: str | None = None
    mode: c.Mode | None = None
    trading_state: str | None = None
    evaluation: c.SignalEvaluation | None = None
    position: c.PositionUpdate | None = None
    open_order: c.OrderApproved | c.OrderEvent | None = None
    """Approved and not final yet; ``None`` once the bot's last order ended."""


def _remember(ids: dict[str, None], item: str, limit: int = 4096) -> bool:
    """Whether ``item`` was seen; a dict keeps insertion order, so the oldest is forgotten first."""
    if item in ids:
        return True
    ids[item] = None
    if len(ids) > limit:
        del ids[next(iter(ids))]
    return False


class LiveState:
    """Everything the view shows, built from messages alone. :meth:`apply` never raises."""

    def __init__(self, feed_size: int = FEED_SIZE) -> None:
        self.bots: dict[str, BotView] = {}
        self.prices: dict[str, Decimal] = {}
        """Latest ticker price per product."""
        self.decisions: deque[Decision] = deque(maxlen=feed_size)
        self.orders: deque[c.OrderEvent] = deque(maxlen=feed_size)
        self.dead_letters: deque[c.DeadLetter] = deque(maxlen=feed_size)
        self.safety_events: deque[c.SafetyEvent] = deque(maxlen=feed_size)
        self.system_state: str | None = None
        self.messages_seen = 0
        self.invalid_messages = 0
        self.duplicates = 0
        self.last_invalid: str | None = None
        # A core subscription also sees re-publishes that JetStream dropped by Nats-Msg-Id.
        self._seen: dict[str, None] = {}
        self._finished: dict[str, None] = {}

    def apply(self, subject: str, payload: bytes) -> None:
        """Take one message; an unknown subject or invalid payload is counted, never raised."""
        self.messages_seen += 1
        try:
            self._apply(subject, payload)
        except Exception as exc:  # a viewer must outlive any message, even one that hits a bug
            self.invalid_messages += 1
            self.last_invalid = f"{subject}: {str(exc).splitlines()[0][:120]}"

    def unrealized_pnl(self, bot_id: str) -> Decimal | None:
        """Quantity × latest price − cost basis; ``None`` when flat or no price was seen yet."""
        bot = self.bots.get(bot_id)
        position = bot.position if bot else None
        if position is None or position.quantity == 0:
            return None
        price = self.prices.get(position.product_id)
        if price is None:  # no price, no mark: never a guessed one
            return None
        with localcontext(prec=_PREC):
            return position.quantity * price - position.cost_basis

    def _apply(self, subject: str, payload: bytes) -> None:
        if subject == s.SAFETY_EVENTS:
            model, token = c.SafetyEvent, ""
        else:
            family, _, token = subject.rpartition(".")
            model = _FAMILIES.get(family)
            if model is None:
                raise ValueError("unknown subject")
        msg = model.model_validate_json(payload)
        message_id = getattr(msg, "message_id", None)
        if message_id is not None and _remember(self._seen, message_id):
            self.duplicates += 1
            return
        self._take(token, msg)

    def _take(self, token: str, msg: BaseModel) -> None:
        match msg:
            case c.Ticker():
                _same(token, msg.product_id)
                self.prices[msg.product_id] = msg.price
            case c.SignalEvaluation():
                self._bot(token, msg.bot_id, msg.product_id).evaluation = msg
            case c.TradeIntent():
                self._bot(token, msg.bot_id, msg.product_id)
            case c.OrderApproved() | c.OrderRejected():
                bot = self._bot(token, msg.intent.bot_id, msg.intent.product_id, msg.mode)
                self.decisions.append(msg)
                approved = isinstance(msg, c.OrderApproved)
                if approved and msg.client_order_id not in self._finished:
                    bot.open_order = msg
            case c.OrderEvent():
                bot = self._bot(token, msg.bot_id, msg.product_id, msg.mode)
                self.orders.append(msg)
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
                if msg.state and msg.bot_id:
                    self._bot(msg.bot_id).trading_state = msg.state
                elif msg.state:
                    self.system_state = msg.state
            case c.InjectedSignal():
                pass  # its evaluation, which follows, is what the view shows

    def _bot(self, token: str, bot_id: str = "", product: str = "", mode: str = "") -> BotView:
        _same(token, bot_id or token)
        bot = self.bots.setdefault(token, BotView(token))
        bot.product_id = product or bot.product_id
        if mode and bot.mode and mode != bot.mode:
            # Mock and production never mix: a bot switched to production starts flat.
            bot.position = bot.open_order = None
        bot.mode = mode or bot.mode
        return bot


def _same(token: str, value: str) -> None:
    if token != value:
        raise ValueError(f"subject token {token!r} does not match payload {value!r}")


def _plain(value: Decimal | None, places: int = 8) -> str:
    if value is None:
        return "—"
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        with localcontext(prec=_PREC):
            value = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    return format_decimal(value)


def _pnl(value: Decimal | None, product_id: str | None) -> Text:
    if value is None:
        return Text("—", style="dim")
    places = 2 if (product_id or "").rpartition("-")[2] in _FIAT else 8
    with localcontext(prec=_PREC):
        rounded = abs(value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN))
    sign, style = "", ""
    if rounded and value > 0:
        sign, style = "+", "green"
    elif rounded:
        sign, style = "-", "red"
    return Text(f"{sign}{format_decimal(rounded)}", style=style)


def _bot_cell(bot_id: str, mode: str | None) -> Text:
    text = Text(bot_id)
    if mode == "production":
        text.append(" PROD", style=PRODUCTION_STYLE)
    return text


def _header(state: LiveState) -> Text:
    modes = {bot.mode for bot in state.bots.values() if bot.mode}
    text = Text("Tranche live  ", style="bold")
    if "production" in modes:
        text.append(" PRODUCTION ", style=PRODUCTION_STYLE)
        text.append(" ")
    if "mock" in modes:
        text.append("MOCK ")
    if not modes:
        text.append("mode unknown (no decision, order or position yet) ", style="dim")
    text.append(f" system: {state.system_state or 'unknown'}")
    text.append(f"  messages: {state.messages_seen}  duplicates: {state.duplicates}  ")
    text.append(
        f"invalid: {state.invalid_messages}", style="yellow" if state.invalid_messages else ""
    )
    if state.last_invalid:
        text.append(f"\nlast invalid: {state.last_invalid}", style="yellow")
    return text


def _table(title: str, columns: str) -> Table:
    table = Table(title=title, title_justify="left", expand=True)
    for name in columns.split():
        table.add_column(name, overflow="fold")
    return table


def _bots_table(state: LiveState) -> Table:
    table = _table("Bots", "bot product state signal price position avg-entry break-even")
    for name in ("realized", "unrealized", "tranches", "open order"):
        table.add_column(name, overflow="fold")
    for bot in sorted(state.bots.values(), key=lambda b: b.bot_id):
        ev, pos, order = bot.evaluation, bot.position, bot.open_order
        signal = "—"
        if ev:
            signal = f"{ev.direction} {_plain(ev.temperature)} {ev.band} "
            signal += f"{ev.confirmations}/{ev.confirmations_needed}"
        order_text = "—"
        if order:
            status = order.status if isinstance(order, c.OrderEvent) else "approved"
            order_text = f"{order.client_order_id} {status}"
        table.add_row(
            _bot_cell(bot.bot_id, bot.mode),
            bot.product_id or "—",
            bot.trading_state or "—",
            signal,
            _plain(state.prices.get(bot.product_id or "")),
            f"{pos.status} {_plain(pos.quantity)}" if pos else "unknown",
            _plain(pos.average_entry_price if pos else None),
            _plain(pos.break_even_price if pos else None),
            _pnl(pos.realized_pnl if pos else None, bot.product_id),
            _pnl(state.unrealized_pnl(bot.bot_id), bot.product_id),
            str(len(pos.tranches)) if pos else "—",
            order_text,
        )
    return table


def _decisions_table(state: LiveState) -> Table:
    table = _table("Decisions (newest first)", "time-utc bot decision intent temperature why")
    for d in reversed(state.decisions):
        i = d.intent
        base, _, quote = i.product_id.partition("-")
        size = (
            f"{_plain(i.quote_size)} {quote}" if i.quote_size else f"{_plain(i.base_size)} {base}"
        )
        if isinstance(d, c.OrderRejected):
            verdict = Text("REJECTED", style="bold red")
            why = Text("\n".join(f"{r.code}: {r.message}" for r in d.reasons), style="red")
        else:
            verdict = Text("approved", style="green")
            why = Text(f"{i.reason.code}: {i.reason.message}\n→ {d.client_order_id}")
        table.add_row(
            d.decided_at.strftime("%H:%M:%S"),
            _bot_cell(i.bot_id, d.mode),
            verdict,
            f"{i.action} {i.side} {size}",
            f"{_plain(i.temperature)} {i.band}",
            why,
        )
    return table


def _orders_table(state: LiveState) -> Table:
    table = _table(
        "Orders and fills (newest first)", "time-utc bot order action status filled fills"
    )
    table.add_column("reason", overflow="fold")
    styles = {"filled": "green", "failed": "red", "cancelled": "yellow", "expired": "yellow"}
    for e in reversed(state.orders):
        fills = "\n".join(
            f"{_plain(f.size)} @ {_plain(f.price)} fee {_plain(f.fee)}" for f in e.fills
        )
        table.add_row(
            e.time.strftime("%H:%M:%S"),
            _bot_cell(e.bot_id, e.mode),
            e.client_order_id,
            f"{e.action} {e.side}",
            Text(e.status, style=styles.get(e.status, "")),
            _plain(e.filled_size),
            fills or "—",
            f"{e.reason.code}: {e.reason.message}" if e.reason else "",
        )
    return table


def render(state: LiveState) -> Group:
    """Header (mode, system state, counters); the latest dead letters and safety events right
    under it, because a terminal cuts the bottom off; then bots, decisions with every rejection
    reason, and orders with their fills, newest first."""
    parts: list = [_header(state)]
    for dl in list(state.dead_letters)[-ALERTS:][::-1]:
        codes = ", ".join(r.code for r in dl.reasons) or dl.error[:80]
        parts.append(Text(f"dead letter [{dl.service}] {dl.subject}: {codes}", style="red"))
    for ev in list(state.safety_events)[-ALERTS:][::-1]:
        who = f" {ev.bot_id}" if ev.bot_id else ""
        parts.append(Text(f"safety{who}: {ev.code} {ev.message} (by {ev.caused_by})", "magenta"))
    parts += [_bots_table(state), _decisions_table(state), _orders_table(state)]
    return Group(*parts)


async def _load_positions(nc: nats.NATS, state: LiveState) -> None:
    """Show positions stored before the view started; a missing bucket just means none yet."""
    # nats.errors.Error covers BucketNotFoundError, NoKeysError (an empty bucket), KeyNotFoundError
    # (deleted between keys() and get()) and a server without JetStream: the live feed still works.
    try:
        kv = await nc.jetstream().key_value(s.POSITIONS_BUCKET)
        keys = await kv.keys()
    except (nats.errors.Error, TimeoutError):
        return
    for key in keys:
        try:
            entry = await kv.get(key)
        except (nats.errors.Error, TimeoutError):
            continue
        if entry.value:
            state.apply(s.for_token(s.LEDGER_POSITIONS, key), entry.value)


async def run_live(
    nats_url: str,
    stop: asyncio.Event,
    refresh_per_second: float = 4,
    console: Console | None = None,
) -> None:
    """Show the live view until ``stop`` is set, then unsubscribe and close the connection."""
    state = LiveState()
    nc = await nats.connect(nats_url)
    try:

        async def on_message(msg) -> None:
            state.apply(msg.subject, msg.data)

        # Subscribe before reading the bucket so no update falls between the two.
        sub = await nc.subscribe(s.all_of(s.PREFIX), cb=on_message)
        await _load_positions(nc, state)
        # No auto-refresh thread: rendering on the event loop never sees a half-applied message.
        with Live(render(state), console=console, auto_refresh=False) as live:
            while not stop.is_set():
                live.update(render(state), refresh=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1 / refresh_per_second)
            live.update(render(state), refresh=True)
        await sub.unsubscribe()
    finally:
        await nc.close()
