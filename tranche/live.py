"""The live terminal view of ``tranche up``: bots, signals, decisions, orders and positions.

Reading never changes anything (DESIGN.md, promise 8): the view is a core-NATS subscription to
``tranche.>``, which sees every publish (JetStream ones included) without creating a stream
consumer, plus a one-off read of the ``tranche_positions`` bucket so open positions show at once.

:class:`~services.dashboard.board.Board` (``LiveState`` here) is the pure aggregation the web
dashboard shows too (subject and bytes in, state out), so it is tested without NATS; :func:`render`
turns it into rich tables; :func:`run_live` wires both to a NATS connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal

import nats
import nats.errors
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from services.dashboard.board import Board, plain, pnl
from services.dashboard.feed import follow
from shared import contracts as c

ALERTS = 3  # dead letters and safety events shown under the header
PRODUCTION_STYLE = "bold red reverse"
LiveState = Board
"""The terminal view's name for the board the web dashboard shows too."""


def _plain(value: Decimal | None, places: int = 8) -> str:
    return plain(value, places)


def _pnl(value: Decimal | None, product_id: str | None) -> Text:
    text, sign = pnl(value, product_id)
    if text == "—":
        return Text(text, style="dim")
    return Text(text, style={1: "green", -1: "red"}.get(sign, ""))


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
    for name in ("realized", "unrealized", "tranches", "open order", "could enter"):
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
            _could_enter(state, bot.bot_id),
        )
    return table


def _could_enter(state: LiveState, bot_id: str) -> Text:
    """Safety's readiness: ``yes``, or the codes that block an entry, with the cooldown left."""
    ready = state.readiness_now(bot_id)
    if ready is None:
        return Text("—", style="dim")
    if ready.can_enter:
        return Text("yes", style="green")
    codes = " ".join(block.code for block in ready.entry_blocks)
    left = ready.entry_cooldown_left
    if left is not None:
        codes += f" ({int(left.total_seconds())} s left)"
    return Text(f"no: {codes}", style="yellow")


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
    styles = {"filled": "green", "failed": "red", "cancelled": "yellow", "expired": "yellow",
              "unknown_at_exchange": "bold red reverse"}  # fmt: skip
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


async def run_live(
    nats_url: str,
    stop: asyncio.Event,
    refresh_per_second: float = 4,
    console: Console | None = None,
    auth: dict[str, str] | None = None,
) -> None:
    """Show the live view until ``stop`` is set, then unsubscribe and close the connection;
    ``auth``: the NATS user and password to read as (the stack's ``operator``)."""
    state = LiveState()
    nc = await nats.connect(nats_url, **(auth or {}))
    try:
        sub = await follow(nc, state)
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
