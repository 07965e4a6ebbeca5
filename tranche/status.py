"""``tranche status``: positions, their stops on the exchange, last decisions and service health,
read over HTTP.

Reading never changes anything (DESIGN.md, promise 8): only GETs, no messages, no timers.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, get_args

import httpx
from rich.console import Console
from rich.table import Table

from shared.contracts import Mode
from shared.stops import read_stops, state_json
from tranche.tables import print_fitted

SERVICES = ("signal", "safety", "executor", "ledger")
"""What trading needs: one that is not ready fails ``tranche status``."""
VIEWS = ("dashboard",)
MODES: tuple[str, ...] = get_args(Mode)
"""Shown beside them, under ``views``; trading does not need them (docker compose runs without)."""


def _get(client: httpx.Client, url: str) -> tuple[int | None, Any]:
    try:
        response = client.get(url, timeout=3)
    except httpx.HTTPError as error:
        return None, f"unreachable: {type(error).__name__}"
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text


def gather(urls: dict[str, str], decisions: int = 10) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (the ``--json`` output)."""
    with httpx.Client() as client:

        def ready(name: str) -> dict[str, Any]:
            code, body = _get(client, urls[name] + "/ready")
            detail = body.get("checks") if isinstance(body, dict) else body
            return {"ready": code == 200, "detail": detail}

        health = {name: ready(name) for name in SERVICES}
        views = {name: ready(name) for name in VIEWS if name in urls}
        # Both books: the ledger answers one mode at a time (mock unless asked), and real money
        # is in the production one.
        books = {mode: _get(client, urls["ledger"] + f"/positions?mode={mode}") for mode in MODES}
        _, recent = _get(client, urls["safety"] + f"/decisions?limit={decisions}")
        asked = _get(client, urls["signal"] + "/stops")
        held = _get(client, urls["executor"] + "/stops")
    positions = [
        view["position"] | {k: view[k] for k in ("mark_price", "unrealized_pnl")}
        for code, found in books.values()
        for view in (found if code == 200 and isinstance(found, list) else [])
    ]
    unread = [mode for mode, (code, found) in books.items() if code != 200]
    return {
        "services": health,
        "views": views,
        "positions": positions,
        "positions_unread": unread,
        "stops": stops_of(positions, asked, held),
        "decisions": recent if isinstance(recent, list) else [],
    }


def stops_of(
    positions: list[dict[str, Any]], asked: tuple[int | None, Any], held: tuple[int | None, Any]
) -> dict[str, Any]:
    """Per bot with ``stop_on_exchange`` and an open position, its stop on the exchange (the
    signal service's ``GET /stops`` joined with the executor's: shared/stops.py), and which of
    the two could not be read (then the table is partial, and says so rather than guess)."""
    holdings = {p["bot_id"]: Decimal(p["quantity"]) for p in positions if p["status"] == "open"}
    states, unread = read_stops(asked, held, holdings)
    return {
        "bots": {bot: state_json(state) for bot, state in sorted(states.items())},
        "unread": unread,
    }


def render(status: dict[str, Any], console: Console) -> None:
    services = Table(title="services")
    for column in ("service", "ready", "detail"):
        services.add_column(column)
    for name, item in status["services"].items():
        services.add_row(name, "yes" if item["ready"] else "NO", str(item["detail"]))
    for name, item in status.get("views", {}).items():
        shown = "yes" if item["ready"] else "no (trading does not need it)"
        services.add_row(f"{name} (view)", shown, str(item["detail"]))
    console.print(services)

    columns = ("bot", "mode", "status", "quantity", "avg entry", "break-even", "tranches",
               "realized P&L", "unrealized P&L", "realized, all positions")  # fmt: skip
    rows = [
        (
            p["bot_id"],
            p["mode"].upper(),
            p["status"],
            p["quantity"],
            p["average_entry_price"] or "-",
            p["break_even_price"] or "-",
            str(len(p["tranches"])) + (" BREACH" if p.get("tranche_breach") else ""),
            p["realized_pnl"],
            p["unrealized_pnl"] or "no price yet",
            p.get("realized_pnl_total", "-"),
        )
        for p in status["positions"]
    ]
    print_fitted(console, "positions", columns, rows)
    for mode in status.get("positions_unread", []):
        console.print(f"positions: could not read the {mode} book; the table above may be partial")
    render_stops(status.get("stops", {}), console)

    decisions = Table(title="last decisions")
    for column in ("decided at", "bot", "action", "decision", "reasons"):
        decisions.add_column(column)
    for d in status["decisions"]:
        reasons = "; ".join(f"{r['code']}: {r['message']}" for r in d["reasons"])
        decisions.add_row(
            d["decided_at"][:19],
            d["bot_id"],
            d["action"],
            "approved" if d["approved"] else "rejected",
            reasons or "-",
        )
    console.print(decisions)


def render_stops(stops: dict[str, Any], console: Console) -> None:
    """One row per bot with ``stop_on_exchange`` and an open position: its live stop (size
    against the holding) or why it has none."""
    columns = ("bot", "stop", "size / holding", "stop price", "limit", "order", "why")
    rows = [
        (
            bot,
            s["state"] if s["size_matches"] is not False else f"{s['state']} WRONG SIZE",
            f"{s['size'] or '-'} / {s['holding']}",
            s["stop_price"] or "-",
            s["limit_price"] or "-",
            s["client_order_id"] or "-",
            f"{s['code']}: {s['reason']}",
        )
        for bot, s in stops.get("bots", {}).items()
    ]
    if rows:
        print_fitted(console, "stops on the exchange", columns, rows)
    for unread in stops.get("unread", []):
        console.print(f"stops: could not read {unread}; the table above may be partial")
