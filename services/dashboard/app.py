"""Dashboard service wiring: the web page of what the services publish, pushed live.

Reads:  tranche.>                         (core NATS: every public message, no stream consumer;
                                           an order event only with the executor's signature,
                                           else counted and left off the board)
        tranche_positions bucket          (read once at start, so open positions show at once)
        GET /states of safety             (read once at start, so an earlier halt shows)
        GET /readiness of safety          (read once at start; tranche.safety.readiness.> after)
        GET /ready of signal, safety, executor, ledger (one probe every few seconds, whatever
                                           the number of open pages; never the exchange)
        GET /stops of signal and executor (each bot's stop on the exchange or why none: at the
                                           same pace)
Writes: nothing, except the operator's halt/resume, forwarded to safety's kill switch.
HTTP:   GET /                             the page (static/index.html and static/)
        GET /events                       server-sent events: the page's parts as they change
        POST /control/{halt|halt-cancel-stops|resume}[/{bot_id}]  forwarded to safety with the
                                          caller's token (halt-cancel-stops: the stops on the
                                          exchange too, as tranche halt --cancel-stops)
        GET /history/{bot_id}[.csv]       the ledger's closed positions of a bot (read through)

Reading never changes anything (DESIGN.md, promise 8): the page and its stream only read; no
business rule lives here (the board shows what the services said).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path as FilePath
from typing import Annotated

import httpx
from fastapi import APIRouter, Header, Path
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from prometheus_client import Counter, Gauge
from sse_starlette import EventSourceResponse
from starlette.staticfiles import StaticFiles

from services.dashboard.board import Board
from services.dashboard.config import WATCHED, DashboardSettings
from services.dashboard.control import Command, forward
from services.dashboard.feed import (
    TOKEN,
    follow,
    load_positions,
    read_exchange_stops,
    read_states,
    signed_order_events,
)
from services.dashboard.stream import Health, Pulse, page_events
from services.dashboard.views import e
from shared.contracts import BotReadiness, Mode
from shared.http import answers
from shared.service import Service, bootstrap
from shared.settings import load

STATIC = FilePath(__file__).resolve().parent / "static"
FEED_SIZE = 30
STATE_READS = 15
STATE_READ_EVERY_S = 2.0

PAGES_OPEN = Gauge("tranche_dashboard_pages_open", "Pages following the event stream")
CONTROLS = Counter(
    "tranche_dashboard_controls_total", "Halt and resume clicks forwarded", ["command", "status"]
)
MESSAGES = Counter("tranche_dashboard_messages_total", "Messages applied to the board")


FORWARDED: dict[int | str, dict] = {
    status: {"description": why, "content": {"text/html": {"schema": {"type": "string"}}}}
    for status, why in (
        (401, "No token given, or safety refused it"),
        (409, "Safety refused the command (its code and sentence)"),
        (502, "Safety unreachable, or its answer unexpected"),
    )
}
"""What a control button can answer besides 200: safety's verdict as an HTML fragment."""


def build(settings: DashboardSettings) -> Service:
    shown = signed_order_events(settings.order_event_verifier())
    service = Service(settings, [])
    board = Board(feed_size=FEED_SIZE)
    health = Health()
    pulse = Pulse()
    client = httpx.AsyncClient()

    def changed() -> None:
        MESSAGES.inc()
        pulse.beat()

    async def start_following() -> None:
        if service.nc is None:  # on_start hooks run once NATS is connected
            raise RuntimeError("not connected to NATS")
        await follow(service.nc, board, changed, shown=shown)

    async def load_readiness(safety: str) -> None:
        """Safety's latest readiness per bot; without it the cards fill in as safety publishes."""
        try:
            response = await client.get(safety + "/readiness", timeout=3)
            response.raise_for_status()
            for found in response.json():
                board.know_readiness(BotReadiness.model_validate(found))
        except (httpx.HTTPError, ValueError, TypeError) as error:
            service.log.warning("dashboard.readiness_unread", error=type(error).__name__)

    async def load_trading_states() -> None:
        """Read safety's trading states and readiness once, so a halt from before the dashboard
        started shows; safety may still be starting, so ask a few times until it answers, then
        never again (what changes later is pushed)."""
        safety = settings.url_of("safety")
        for _ in range(STATE_READS):
            try:
                await read_states(client, safety, board)
                await load_readiness(safety)
                pulse.beat()
                return
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
                service.log.debug("dashboard.states_unread", error=type(error).__name__)
            await asyncio.sleep(STATE_READ_EVERY_S)

    async def watch_health() -> None:
        while True:
            for name in WATCHED:
                try:
                    response = await client.get(settings.url_of(name) + "/ready", timeout=2)
                    ready, detail = response.status_code == 200, response.text[:300]
                except httpx.HTTPError as error:
                    ready, detail = False, f"unreachable: {type(error).__name__}"
                if health.update(name, ready, detail):
                    pulse.beat()
            signal, executor = settings.url_of("signal"), settings.url_of("executor")
            if await read_exchange_stops(client, signal, executor, board):
                pulse.beat()
            await asyncio.sleep(settings.health_every_s)

    api = APIRouter(tags=["dashboard"])

    @api.get("/", summary="The dashboard page", response_class=FileResponse)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @api.get(
        "/events",
        summary="Server-sent events: the page's parts as they change",
        response_class=EventSourceResponse,
        responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
    )
    async def events() -> EventSourceResponse:
        async def counted():
            PAGES_OPEN.inc()
            try:
                async for event in page_events(
                    board, health, pulse, settings.mode, settings.push_every_s
                ):
                    yield event
            finally:
                PAGES_OPEN.dec()

        return EventSourceResponse(counted(), ping=15, headers={"Cache-Control": "no-cache"})

    async def control(command: Command, bot_id: str | None, authorization: str | None):
        outcome = await forward(client, settings.url_of("safety"), command, bot_id, authorization)
        CONTROLS.labels(command, str(outcome.status)).inc()
        # The log names the command and its outcome; the token is never in it.
        service.log.info(
            "dashboard.control", command=command, target=bot_id or "all", status=outcome.status
        )
        css = "ok" if outcome.status == 200 else "refused"
        return HTMLResponse(
            f'<span class="{css}" data-status="{outcome.status}">{e(outcome.message)}</span>',
            status_code=outcome.status,
        )

    @api.post(
        "/control/{command}",
        summary="Halt or resume every bot (forwarded to safety with the caller's bearer token)",
        response_class=HTMLResponse,
        responses=FORWARDED,
    )
    async def control_all(
        command: Command, authorization: Annotated[str | None, Header()] = None
    ) -> HTMLResponse:
        return await control(command, None, authorization)

    @api.post(
        "/control/{command}/{bot_id}",
        summary="Halt or resume one bot (forwarded to safety with the caller's bearer token)",
        response_class=HTMLResponse,
        responses=FORWARDED,
    )
    async def control_bot(
        command: Command,
        bot_id: Annotated[str, Path(pattern=f"^{TOKEN.pattern}$")],
        authorization: Annotated[str | None, Header()] = None,
    ) -> HTMLResponse:
        return await control(command, bot_id, authorization)

    async def from_ledger(path: str, mode: str) -> Response:
        try:
            answer = await client.get(
                settings.url_of("ledger") + path, params={"mode": mode}, timeout=10
            )
        except httpx.HTTPError as error:
            return JSONResponse({"detail": f"the ledger did not answer: {error}"}, status_code=502)
        keep = {k: v for k, v in answer.headers.items() if k.lower() == "content-disposition"}
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
            headers=keep,
        )

    @api.get(
        "/history/{bot_id}.csv",
        summary="A bot's closed positions as CSV, one row per fill (from the ledger)",
        response_class=Response,
        responses=answers(404, 502, json=True),
    )
    async def history_csv(
        bot_id: Annotated[str, Path(pattern=f"^{TOKEN.pattern}$")], mode: Mode = "mock"
    ) -> Response:
        return await from_ledger(f"/positions/{bot_id}/history.csv", mode)

    @api.get(
        "/history/{bot_id}",
        summary="A bot's closed positions: entries, exits, fees, realized P&L (from the ledger)",
        response_class=Response,
        responses=answers(404, 502, json=True),
    )
    async def history(
        bot_id: Annotated[str, Path(pattern=f"^{TOKEN.pattern}$")], mode: Mode = "mock"
    ) -> Response:
        return await from_ledger(f"/positions/{bot_id}/history", mode)

    api.mount("/static", StaticFiles(directory=STATIC), name="static")

    async def catch_up() -> None:
        """After a reconnect to NATS: what was published while the dashboard was cut off is not
        delivered again (it follows plain subjects), so the positions bucket and safety's states
        are read again; without it a card showed a position closed since as current."""
        if service.nc is not None:
            await load_positions(service.nc, board)
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
            safety = settings.url_of("safety")
            await read_states(client, safety, board, newest=True)
            await load_readiness(safety)
        pulse.beat()
        service.log.info("dashboard.caught_up")

    service.on_start.append(start_following)
    service.on_reconnect.append(catch_up)
    service.background.append(watch_health)
    service.background.append(load_trading_states)
    service.http_routers.append(api)
    return service


def main() -> None:
    settings = load(DashboardSettings)
    bootstrap(settings)
    # httpx logs every request at info: four health probes every few seconds would fill the log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    build(settings).run()
