"""The live terminal view of ``tranche up``: services, bots, signals, decisions, orders and
positions.

Reading never changes anything (DESIGN.md, promise 8): the view is a core-NATS subscription to
``tranche.>``, which sees every publish (JetStream ones included) without creating a stream
consumer, as the ``operator`` NATS user, plus one read of the ledger's ``GET /positions`` (every
position that exists, in every mode) and of safety's ``GET /states``, over HTTP: the operator may
not create consumers on the positions bucket.

One clock: every time shown is event time (the market data's, wall-clock time in live trading),
in UTC, as the services decide by it (DESIGN.md, promise 6). Without a terminal (a pipe,
``| tee``) the view prints one plain line per decision, order event, position change and alert
instead of redrawing tables.

:class:`~services.dashboard.board.Board` (``LiveState`` here) is the pure aggregation the web
dashboard shows too (subject and bytes in, state out), so it is tested without NATS; :func:`render`
turns it into rich tables; :func:`run_live` wires both to a NATS connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from decimal import Decimal

import httpx
import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from services.dashboard.board import Board, plain, pnl
from services.dashboard.feed import follow, read_positions, read_states
from shared import contracts as c

ALERTS = 3  # dead letters and safety events shown under the header
FIRST_READS = 15  # tries at the ledger's positions and safety's states, one every 2 s
WIDE = 120
"""Below this width the tables keep only the columns a trader needs first."""
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
    text.append("\ntimes: event time, UTC", style="dim")
    return text


def services_row(services: dict[str, str]) -> Text:
    """``services: signal running · executor restarting in 2 s (killed by SIGKILL) · ...``."""
    text = Text("services: ", style="bold")
    for n, (name, how) in enumerate(services.items()):
        if n:
            text.append(" · ")
        style = "green" if how.startswith("running") else "bold red"
        text.append(f"{name} {how}", style=style)
    return text


def _table(title: str, columns: str) -> Table:
    table = Table(title=title, title_justify="left", expand=True)
    for name in columns.split():
        table.add_column(name, overflow="fold")
    return table


def _narrow(table: Table, keep: Iterable[str]) -> Table:
    """The same table with only the ``keep`` columns (for terminals narrower than WIDE)."""
    wanted = set(keep)
    narrow = Table(title=table.title, title_justify="left", expand=True, padding=(0, 0))
    cells = [col for col in table.columns if str(col.header) in wanted]
    for col in cells:
        narrow.add_column(col.header, overflow="fold")
    for row in range(table.row_count):
        narrow.add_row(*(list(col.cells)[row] for col in cells))
    return narrow


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
    table = _table("Decisions (newest first)", "time bot decision intent temperature why")
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
            d.time.strftime("%H:%M:%S"),
            _bot_cell(i.bot_id, d.mode),
            verdict,
            f"{i.action} {i.side} {size}",
            f"{_plain(i.temperature)} {i.band}",
            why,
        )
    return table


def _orders_table(state: LiveState) -> Table:
    table = _table("Orders and fills (newest first)", "time bot order action status filled fills")
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


def render(
    state: LiveState,
    services: dict[str, str] | None = None,
    notes: Iterable[str] = (),
    width: int = WIDE,
) -> Group:
    """Header (mode, system state, counters, the clock), the services row and what the
    supervisor last did; the latest dead letters and safety events right under it, because a
    terminal cuts the bottom off; then bots, decisions with every rejection reason, and orders
    with their fills, newest first. Below ``WIDE`` columns the tables keep fewer columns."""
    parts: list[RenderableType] = [_header(state)]
    if services:
        parts.append(services_row(services))
    parts += [Text(note, style="yellow") for note in notes]
    parts += [Text(line, style="red") for line in _alerts(state)]
    tables = [_bots_table(state), _decisions_table(state), _orders_table(state)]
    if width < WIDE:
        tables = [
            _narrow(tables[0], ("bot", "state", "position", "avg-entry", "realized")),
            _narrow(tables[1], ("time", "bot", "decision", "why")),
            _narrow(tables[2], ("time", "bot", "status", "filled", "fills")),
        ]
    return Group(*parts, *tables)


def _alerts(state: LiveState) -> list[str]:
    found = []
    for dl in list(state.dead_letters)[-ALERTS:][::-1]:
        codes = ", ".join(r.code for r in dl.reasons) or dl.error[:80]
        found.append(f"dead letter [{dl.service}] {dl.subject}: {codes}")
    for ev in list(state.safety_events)[-ALERTS:][::-1]:
        who = f" {ev.bot_id}" if ev.bot_id else ""
        by = f" (by {ev.caused_by})" if ev.caused_by else ""
        found.append(f"safety{who}: {ev.code} {ev.message}{by}")
    return found


class PlainLines:
    """The view without a terminal: one line per new decision, order event, position change,
    dead letter or safety event, in the order they arrived (event time, UTC)."""

    def __init__(self, state: LiveState, write: Callable[[str], None]):
        self.state, self.write = state, write
        self._last: dict[str, object] = {}

    def _new(self, key: str, item: object) -> bool:
        if item is None or self._last.get(key) is item:
            return False
        self._last[key] = item
        return True

    def __call__(self) -> None:
        s = self.state
        if s.decisions and self._new("decision", s.decisions[-1]):
            d = s.decisions[-1]
            i = d.intent
            if isinstance(d, c.OrderRejected):
                why = "; ".join(f"{r.code}: {r.message}" for r in d.reasons)
                self.write(f"{d.time:%H:%M:%S} {i.bot_id} REJECTED {i.action} {i.side}: {why}")
            else:
                self.write(
                    f"{d.time:%H:%M:%S} {i.bot_id} approved {i.action} {i.side}"
                    f" -> {d.client_order_id}"
                )
        if s.orders and self._new("order", s.orders[-1]):
            e = s.orders[-1]
            fills = ", ".join(f"{_plain(f.size)} @ {_plain(f.price)}" for f in e.fills)
            self.write(
                f"{e.time:%H:%M:%S} {e.bot_id} order {e.client_order_id} {e.status}"
                + (f": {fills}" if fills else "")
            )
        for bot in sorted(s.bots.values(), key=lambda b: b.bot_id):
            pos = bot.position
            if pos is not None and self._new(f"position {bot.bot_id}", pos):
                self.write(
                    f"{pos.time:%H:%M:%S} {bot.bot_id} position {pos.status}"
                    f" {_plain(pos.quantity)} avg {_plain(pos.average_entry_price)}"
                    f" realized {_plain(pos.realized_pnl)}"
                )
        for key, found in (("dead letter", s.dead_letters), ("safety", s.safety_events)):
            if found and self._new(key, found[-1]):
                self.write(_alerts_of(s, key))


def _alerts_of(state: LiveState, key: str) -> str:
    lines = [line for line in _alerts(state) if line.startswith(key)]
    return lines[0] if lines else key


async def first_reads(
    state: LiveState, urls: dict[str, str], stop: asyncio.Event, changed: Callable[[], None]
) -> None:
    """Positions from the ledger and trading states from safety, once each, retried while a
    service is still starting (what changes later arrives as messages)."""
    pending = {
        name: reader
        for name, reader in (("ledger", read_positions), ("safety", read_states))
        if name in urls
    }
    async with httpx.AsyncClient() as client:
        for _ in range(FIRST_READS):
            for name, reader in list(pending.items()):
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
                    await reader(client, urls[name], state)
                    del pending[name]
                    changed()
            if not pending:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=2)
            if stop.is_set():
                return


async def _no_bucket(nc: NatsClient, board: Board) -> None:
    """The operator reads positions over HTTP (:func:`first_reads`), never the bucket."""


async def run_live(
    nats_url: str,
    stop: asyncio.Event,
    refresh_per_second: float = 4,
    console: Console | None = None,
    auth: dict[str, str] | None = None,
    urls: dict[str, str] | None = None,
    services: Callable[[], dict[str, str]] | None = None,
    notes: Iterable[str] = (),
) -> None:
    """Show the live view until ``stop`` is set, then unsubscribe and close the connection.

    ``auth``: the NATS user and password to read as (the stack's ``operator``); ``urls``: the
    services' HTTP addresses (the ledger's positions, safety's states); ``services``: each
    service's state in a phrase (the supervisor's); ``notes``: what the supervisor last did."""
    console = console or Console()
    state = LiveState()
    plain_lines = None if console.is_terminal else PlainLines(state, console.print)
    changed = plain_lines or (lambda: None)
    nc = await nats.connect(nats_url, **(auth or {}))
    reads = asyncio.create_task(first_reads(state, urls or {}, stop, changed))
    try:
        sub = await follow(nc, state, changed, first_read=_no_bucket)
        if plain_lines is not None:
            shown: dict[str, str] = {}
            while not stop.is_set():
                now = services() if services else {}
                if now != shown:
                    console.print(services_row(now).plain)
                    shown = now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1)
        else:

            def screen() -> Group:
                return render(
                    state, services() if services else None, list(notes), console.size.width
                )

            # No auto-refresh thread: rendering on the event loop never sees a half-applied
            # message.
            with Live(screen(), console=console, auto_refresh=False) as live:
                while not stop.is_set():
                    live.update(screen(), refresh=True)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=1 / refresh_per_second)
                live.update(screen(), refresh=True)
        await sub.unsubscribe()
    finally:
        reads.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reads
        await nc.close()
