"""HTML fragments of the page, made from the board: pure functions, text in, text out.

The page swaps each fragment into its place when the stream sends it (htmx's SSE extension), so
every figure is formatted here, from ``Decimal``, never from a float in the browser. Everything
a message carried is escaped: a bot id or a reason is text, never markup.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from html import escape

from services.dashboard.board import Board, BotView, ReadinessNow, plain, pnl
from shared import contracts as c

STATES = ("active", "reducing", "halted")
HealthMap = dict[str, tuple[bool, str]]
"""Service name -> (ready, what its ``/ready`` said)."""


def e(value: object) -> str:
    return escape(str(value), quote=True)


def _clock(at: datetime) -> str:
    """Event time (market time in a replay), UTC, as every message carries it."""
    return at.strftime("%H:%M:%S")


def _money(value: Decimal | None, product_id: str | None) -> str:
    text, sign = pnl(value, product_id)
    css = {1: "gain", -1: "loss"}.get(sign, "")
    return f'<span class="pnl {css}">{e(text)}</span>'


def _mode_badge(mode: str | None) -> str:
    if mode == "production":
        return '<span class="badge production">PRODUCTION</span>'
    if mode == "mock":
        return '<span class="badge mock">mock</span>'
    return ""


def _state_badge(state: str | None) -> str:
    if state in STATES:
        return f'<span class="badge state-{state}" data-state="{state}">{state}</span>'
    return '<span class="badge state-unknown" data-state="unknown">no state reported</span>'


def _bot_status_badge(status: str | None) -> str:
    """A paused or removed bot (``tranche bots pause|remove``): said next to safety's state."""
    if status in ("paused", "removed"):
        return f' <span class="badge bot-{status}" data-bot-status="{status}">{status}</span>'
    return ""


def header(board: Board, configured_mode: str) -> str:
    """The mode, unmistakable; the system's trading state; counters and the latest alerts."""
    modes = board.modes
    if "production" in modes or (not modes and configured_mode == "production"):
        banner = '<div class="mode production" data-mode="production">PRODUCTION — real money'
        if "mock" in modes:
            banner += " (some bots still report mock)"
        banner += "</div>"
    elif modes:
        banner = '<div class="mode mock" data-mode="mock">MOCK — paper trading</div>'
    else:
        banner = (
            f'<div class="mode unknown" data-mode="unknown">{e(configured_mode.upper())} '
            "configured — no message has carried a mode yet</div>"
        )
    why = ""
    if board.system_reason is not None:
        r = board.system_reason
        why = f' <span class="why">{e(r.sentence())}</span>' if r.sentence() else ""
    alerts = "".join(
        f'<li class="alert">dead letter [{e(d.service)}] {e(d.subject)}: '
        f"{e(', '.join(r.code for r in d.reasons) or d.error[:80])}</li>"
        for d in list(board.dead_letters)[-3:][::-1]
    )
    if board.last_invalid:
        alerts += f'<li class="alert">last invalid message: {e(board.last_invalid)}</li>'
    return (
        f"{banner}"
        f'<div class="system">all bots: {_state_badge(board.system_state)}{why}'
        f'<span class="counters">messages {board.messages_seen} · duplicates '
        f"{board.duplicates} · invalid {board.invalid_messages}</span></div>"
        + (f'<ul class="alerts">{alerts}</ul>' if alerts else "")
    )


def _confirm_timer(ev: c.SignalEvaluation) -> str:
    """How long the direction has held against the seconds it must (event time)."""
    if ev.confirming_since is None or ev.confirm_seconds == 0:
        return ""
    held = max(timedelta(0), ev.time - ev.confirming_since)
    need = timedelta(seconds=ev.confirm_seconds)
    return (
        f' <span class="confirm-timer" data-since="{e(ev.confirming_since.isoformat())}">'
        f"held {_left(held)} of {_left(need)}</span>"
    )


def _evaluation(ev: c.SignalEvaluation | None) -> str:
    if ev is None:
        return '<div class="evaluation muted">no evaluation yet</div>'
    score = f" · score {e(plain(ev.score, 4))}" if ev.score is not None else ""
    return (
        f'<div class="evaluation">signal <b class="dir-{e(ev.direction)}">{e(ev.direction)}</b>'
        f"{score} · temperature {e(plain(ev.temperature, 2))} "
        f'<span class="band band-{e(ev.band)}">{e(ev.band)}</span> · confirmed '
        f'<span class="confirmations">{ev.confirmations}/{ev.confirmations_needed}</span>'
        f"{_confirm_timer(ev)}"
        f' <span class="muted">at {_clock(ev.time)} — {e(ev.reason.message)}</span></div>'
    )


def _decision(d: c.OrderApproved | c.OrderRejected | None) -> str:
    if d is None:
        return ""
    if isinstance(d, c.OrderRejected):
        reasons = "".join(
            f'<li><code class="reason-code">{e(r.code)}</code> {e(r.message)}</li>'
            for r in d.reasons
        )
        return (
            f'<div class="last-decision rejected">last intent REJECTED at {_clock(d.time)}'
            f" ({e(d.intent.action)} {e(d.intent.side)})<ul>{reasons}</ul></div>"
        )
    return (
        f'<div class="last-decision approved">last intent approved at {_clock(d.time)}'
        f" ({e(d.intent.action)} {e(d.intent.side)})</div>"
    )


def _left(delta: timedelta) -> str:
    total = max(0, int(delta.total_seconds() + 0.999))
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _cooldown(kind: str, until: datetime | None, left: timedelta | None) -> str:
    if until is None or left is None:
        return f'<span class="cooldown none" data-cooldown="{kind}">no {kind} cooldown</span>'
    return (
        f'<span class="cooldown" data-cooldown="{kind}" data-until="{e(until.isoformat())}">'
        f"{kind} cooldown <b>{_left(left)}</b> left (until {_clock(until)})</span>"
    )


def _blocks(verb: str, can: bool, blocks: Iterable[c.ReadinessBlock]) -> str:
    if can:
        return f'<div class="can yes" data-can-{verb}="yes">could {verb} now</div>'
    items = "".join(
        f'<li><code class="reason-code">{e(b.code)}</code> {e(b.message)}'
        + (f' <span class="muted">(lifts at {_clock(b.until)})</span>' if b.until else "")
        + "</li>"
        for b in blocks
    )
    return f'<div class="can no" data-can-{verb}="no">cannot {verb} now:<ul>{items}</ul></div>'


def _readiness(ready: ReadinessNow | None) -> str:
    """Whether safety would let the bot trade now, why not, and the cooldown timers."""
    if ready is None:
        return (
            '<div class="readiness muted" data-can-enter="unknown">'
            "safety has not judged this bot yet</div>"
        )
    return (
        f'<div class="readiness">{_blocks("enter", ready.can_enter, ready.entry_blocks)}'
        f'{_blocks("exit", ready.can_exit, ready.exit_blocks)}<div class="cooldowns">'
        f"{_cooldown('entry', ready.entry_cooldown_until, ready.entry_cooldown_left)} · "
        f"{_cooldown('exit', ready.exit_cooldown_until, ready.exit_cooldown_left)}"
        f' <span class="muted">(safety judged at {_clock(ready.judged_at)}, '
        f"now {_clock(ready.now)} event time)</span></div></div>"
    )


def _open_order(order: c.OrderApproved | c.OrderEvent | None) -> str:
    if order is None:
        return '<div class="order muted">no open order</div>'
    status: str
    if isinstance(order, c.OrderEvent):
        status = order.status
        what = f"{order.action} {order.side}, filled {plain(order.filled_size)}"
    else:
        status = "approved"
        what = f"{order.intent.action} {order.intent.side}"
    return (
        f'<div class="order">open order <code>{e(order.client_order_id)}</code> '
        f'<span class="status">{e(status)}</span> {e(what)}</div>'
    )


def _position(board: Board, bot: BotView) -> str:
    pos = bot.position
    if pos is None:
        return '<div class="position muted" data-status="unknown">position unknown</div>'
    product = bot.product_id
    figures = (
        ("quantity", e(plain(pos.quantity))),
        ("avg entry", e(plain(pos.average_entry_price))),
        ("break-even", e(plain(pos.break_even_price))),
        ("realized", _money(pos.realized_pnl, product)),
        ("unrealized", _money(board.unrealized_pnl(bot.bot_id), product)),
        ("realized, all positions", _money(pos.realized_pnl_total, product)),
    )
    cells = "".join(f"<div><dt>{name}</dt><dd>{value}</dd></div>" for name, value in figures)
    tranches = "".join(
        f"<tr><td>{t.index}</td><td>{e(plain(t.entry_price))}</td><td>{e(plain(t.size))}</td>"
        f"<td>{e(plain(t.remaining_size))}</td><td>{e(plain(t.fees))}</td>"
        f"<td>{_money(t.realized_pnl, product)}</td></tr>"
        for t in pos.tranches
    )
    breach = ' <span class="badge breach">TRANCHE CAP BREACHED</span>' if pos.tranche_breach else ""
    table = (
        '<table class="tranches"><thead><tr><th>tranche</th><th>entry</th><th>size</th>'
        f"<th>remaining</th><th>fees</th><th>realized</th></tr></thead><tbody>{tranches}"
        "</tbody></table>"
        if tranches
        else ""
    )
    history = (
        f'<div class="history">closed positions: <a href="/history/{e(bot.bot_id)}'
        f'?mode={e(pos.mode)}">view</a> · <a href="/history/{e(bot.bot_id)}.csv?mode='
        f'{e(pos.mode)}" download>CSV</a></div>'
    )
    return (
        f'<div class="position" data-status="{e(pos.status)}" data-quantity="'
        f'{e(plain(pos.quantity))}"><div class="position-title">position '
        f"<b>{e(pos.status)}</b>{breach}</div><dl>{cells}</dl>{table}{history}</div>"
    )


def _exchange_stop(board: Board, bot: BotView) -> str:
    """The bot's stop on the exchange (size against the holding) or why it has none."""
    stop = bot.exchange_stop
    if stop is None:
        return ""
    order = stop.order
    size = ""
    if order is not None:
        wrong = (
            ' <span class="badge breach">WRONG SIZE</span>' if stop.size_matches is False else ""
        )
        size = (
            f" sell <b>{e(plain(order.size))}</b> of {e(plain(stop.holding))} at stop "
            f"{e(plain(order.stop_price))} (limit {e(plain(order.limit_price))}){wrong}"
        )
    cid = f" <code>{e(stop.client_order_id)}</code>" if stop.client_order_id else ""
    old = ""
    if board.stops_unread:
        old = f'<div class="muted">as last read: {e("; ".join(board.stops_unread))}</div>'
    return (
        f'<div class="exchange-stop" data-state="{e(stop.state)}" data-code="'
        f'{e(stop.reason.code)}">stop on the exchange <b>{e(stop.state)}</b>{cid}{size}'
        f'<div class="why">{e(stop.reason.code)}: {e(stop.reason.message)}</div>{old}</div>'
    )


def _controls(bot_id: str) -> str:
    # Shown only once an operator entered a token (the page hides .control without one).
    return (
        '<div class="control">'
        f'<button class="halt" hx-post="/control/halt/{e(bot_id)}" '
        f'hx-target="#control-result">Halt {e(bot_id)}</button>'
        f'<button class="halt-stops" hx-post="/control/halt-cancel-stops/{e(bot_id)}" '
        f'hx-confirm="Halt {e(bot_id)} and cancel its stops on the exchange?" '
        f'hx-target="#control-result">Halt {e(bot_id)} and cancel its stops</button>'
        f'<button class="resume" hx-post="/control/resume/{e(bot_id)}" '
        f'hx-target="#control-result">Resume {e(bot_id)}</button></div>'
    )


def bot_card(board: Board, bot: BotView) -> str:
    why = ""
    if bot.state_reason is not None:
        r = bot.state_reason
        why = f'<div class="why">{e(r.sentence())}</div>' if r.sentence() else ""
    price = board.prices.get(bot.product_id or "")
    return (
        f'<article class="bot" id="bot-{e(bot.bot_id)}" data-bot="{e(bot.bot_id)}">'
        f'<header><h3>{e(bot.bot_id)}</h3> <span class="product">{e(bot.product_id or "—")}'
        f"</span> {_mode_badge(bot.mode)} {_state_badge(bot.trading_state)}"
        f"{_bot_status_badge(bot.bot_status)}"
        f' <span class="price">last {e(plain(price))}</span></header>{why}'
        f"{_evaluation(bot.evaluation)}{_readiness(board.readiness_now(bot.bot_id))}"
        f"{_decision(bot.last_decision)}"
        f"{_open_order(bot.open_order)}{_position(board, bot)}{_exchange_stop(board, bot)}"
        f"{_controls(bot.bot_id)}</article>"
    )


def bots(board: Board) -> str:
    """A card per bot, by id."""
    if not board.bots:
        return '<p class="muted">No bot has published anything yet.</p>'
    return "".join(bot_card(board, board.bots[name]) for name in sorted(board.bots))


def feed(board: Board) -> str:
    """Decisions with every rejection reason, and orders with their fills, newest first."""
    decisions = []
    for d in reversed(board.decisions):
        i = d.intent
        size = f"{plain(i.quote_size)} quote" if i.quote_size else f"{plain(i.base_size)} base"
        if isinstance(d, c.OrderRejected):
            verdict = '<span class="verdict rejected">REJECTED</span>'
            why = "; ".join(
                f'<code class="reason-code">{e(r.code)}</code> {e(r.message)}' for r in d.reasons
            )
        else:
            verdict = '<span class="verdict approved">approved</span>'
            why = f"{e(i.reason.code)}: {e(i.reason.message)} → <code>{e(d.client_order_id)}</code>"
        decisions.append(
            f'<li class="decision"><time>{_clock(d.time)}</time> <b>{e(i.bot_id)}</b> '
            f"{_mode_badge(d.mode)} {verdict} {e(i.action)} {e(i.side)} {e(size)} "
            f'at {e(plain(i.temperature, 2))} ({e(i.band)}) <span class="why">{why}</span></li>'
        )
    orders = []
    for o in reversed(board.orders):
        fills = ", ".join(
            f"{e(plain(f.size))} @ {e(plain(f.price))} fee {e(plain(f.fee))}" for f in o.fills
        )
        reason = ""
        if o.reason is not None:
            reason = f' <span class="why">{e(o.reason.code)}: {e(o.reason.message)}</span>'
        orders.append(
            f'<li class="order-event"><time>{_clock(o.time)}</time> <b>{e(o.bot_id)}</b> '
            f"{_mode_badge(o.mode)} <code>{e(o.client_order_id)}</code> {e(o.action)} "
            f'{e(o.side)} <span class="status status-{e(o.status)}">{e(o.status)}</span>'
            f"{' fills ' + fills if fills else ''}{reason}</li>"
        )
    empty = '<li class="muted">nothing yet</li>'
    utc = '<span class="muted">(UTC)</span>'
    return (
        f'<div class="feed-column"><h3>Decisions {utc}</h3><ul class="decisions">'
        f"{''.join(decisions) or empty}</ul></div>"
        f'<div class="feed-column"><h3>Orders and fills {utc}</h3><ul class="orders">'
        f"{''.join(orders) or empty}</ul></div>"
    )


def health(found: HealthMap) -> str:
    """Each service's readiness as its own ``/ready`` last said it."""
    if not found:
        return '<span class="muted">not checked yet</span>'
    items = []
    for name, (ready, detail) in found.items():
        css, word = ("ready", "ready") if ready else ("down", "NOT READY")
        items.append(
            f'<span class="service {css}" data-service="{e(name)}" title="{e(detail)}">'
            f"{e(name)} {word}</span>{_exchange(detail)}"
        )
    return "".join(items)


def _exchange(detail: str) -> str:
    """The executor's word on the exchange (reachable, degraded, unreachable, refused), shown
    whenever it is anything but plainly reachable."""
    try:
        said = json.loads(detail).get("checks", {}).get("exchange")
    except (ValueError, AttributeError):
        return ""
    if not said or said == "ok":
        return ""
    said = said.removeprefix("failing: ExchangeNotReady: ").removeprefix("ok (").rstrip(")")
    css = "ready" if said.startswith(("degraded", "not asked")) else "down"
    return f'<span class="service exchange {css}" title="{e(said)}">exchange {e(said)}</span>'
