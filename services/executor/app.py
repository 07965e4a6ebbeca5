"""Executor service wiring.

Reads:  tranche.orders.approved.<bot>     (durable, consumer executor-approved-v2)
        tranche.safety.events             (durable, consumer executor-safety-events-v2: halts)
        tranche.market.ticker.<product>   (core NATS: the mock exchange's prices)
Writes: tranche.orders.events.<bot>       (outbox)
        tranche.dlq.executor              (refused input)
HTTP:   GET /orders                       recent orders and their status
        GET /orders/{client_order_id}     one order with its fills and the intent's price

The rules are in ``orders.py`` (pure), placing and status sync in ``sync.py``, the exchanges in
``exchanges/`` (mock by default; Coinbase only with all three of the production opt-in).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from faststream.nats.annotations import NatsMessage

from services.executor.config import ExecutorSettings
from services.executor.exchanges.mock import MOCK_TABLES, MockExchange, Quote
from services.executor.gateway import Gateway
from services.executor.ratelimit import RateLimiter
from services.executor.reconcile import reconcile
from services.executor.store import TABLES, OrderRow, fills_of, pricing_of, recent_orders
from services.executor.sync import Executor
from shared import subjects
from shared.bots import LiveCatalog
from shared.bus import durable, require_subject_token
from shared.catalog import CatalogError, load_catalog
from shared.contracts import OrderApproved, OrderEvent, SafetyEvent, Ticker
from shared.eventtime import NewestTimes, bounds_for
from shared.http import answers
from shared.money import utc_now
from shared.service import Service, serve
from shared.streams import EXECUTOR_APPROVED, EXECUTOR_SAFETY_EVENTS


def production_refusal(settings: ExecutorSettings) -> str | None:
    """The sentence production mode stops with when its opt-in is incomplete (never a secret)."""
    if settings.mode != "production":
        return None
    missing = settings.production_opt_in_missing()
    if not missing:
        return None
    return (
        f"executor: production mode trades real money and needs {' and '.join(missing)}; "
        "not starting (TRANCHE_MODE=mock trades on the mock exchange)"
    )


def build(settings: ExecutorSettings, exchange: Any = None) -> Service:
    """Wire the service; ``exchange`` replaces the one the settings choose (tests)."""
    refusal = production_refusal(settings)
    if refusal:
        raise SystemExit(refusal)
    service = Service(settings, [*TABLES, *MOCK_TABLES])
    log = service.log
    try:
        catalog = load_catalog(settings.config_file)
    except CatalogError as error:
        raise SystemExit(f"executor: {error}") from None
    quotes: dict[str, Quote] = {}
    # A tick far ahead of the newest (or of the clock) would become "now" for good: refused.
    ticker_times = NewestTimes(bounds_for(settings.mode), utc_now)
    if exchange is None:
        if settings.mode == "production":
            from services.executor.exchanges.coinbase import CoinbaseExchange

            exchange = CoinbaseExchange.from_settings(settings)
        else:
            exchange = MockExchange(
                service.engine, catalog.products, None, quotes.get, settings.mock_settings()
            )
    gateway = Gateway(
        exchange,
        RateLimiter(settings.exchange_requests_per_s),
        attempts=settings.retry_attempts,
        base_delay_s=settings.retry_base_delay_s,
        max_delay_s=settings.retry_max_delay_s,
        seed=settings.mock_seed,
    )
    mock = isinstance(exchange, MockExchange)

    def market_time(product_id: str):
        quote = quotes.get(product_id)
        return quote.time if quote is not None and mock else None

    # Bots created at run time are in the tranche_bots bucket: adopted orders look them up there.
    live = LiveCatalog(catalog)
    executor = Executor(
        service,
        settings,
        live,
        gateway,
        event_clock=market_time,
        stamp_at_intent=mock and settings.mock_fill_at == "intent",
    )
    service.executor = executor  # type: ignore[attr-defined]  # for tests and operators

    @durable(service.router, EXECUTOR_APPROVED, title="executor-approved")
    async def on_approved(body: OrderApproved, msg: NatsMessage) -> None:
        require_subject_token(msg, body.intent.bot_id, "approval")
        await executor.on_approval(body)

    @durable(service.router, EXECUTOR_SAFETY_EVENTS, title="executor-safety-events")
    async def on_safety_event(body: SafetyEvent) -> None:
        await executor.on_safety_event(body)

    @service.router.subscriber(subjects.all_of(subjects.MARKET_TICKER), title="executor-ticker")
    async def on_ticker(body: Ticker) -> None:
        ticker_times.admit(body.product_id, body.time, "ticker time")
        known = quotes.get(body.product_id)
        if known is not None and body.time < known.time:
            return
        quotes[body.product_id] = Quote(price=body.price, time=body.time)
        if mock and await asyncio.to_thread(exchange.on_quote, body.product_id):
            executor.poll_all_now()  # resting orders filled: report it now, not at the next poll

    api = APIRouter(tags=["orders"])

    @api.get("/orders", summary="Recent orders, newest first")
    async def orders(limit: int = Query(50, ge=1, le=1000)) -> list[dict]:
        rows = await service.read(lambda session: recent_orders(session, limit))
        return [row.model_dump(mode="json") for row in rows]

    @api.get(
        "/orders/{client_order_id}", summary="One order with its fills", responses=answers(404)
    )
    async def order(client_order_id: str) -> dict:
        def read(session):
            row = session.get(OrderRow, client_order_id)
            if row is None:
                return None
            fills = [fill.model_dump(mode="json") for fill in fills_of(session, client_order_id)]
            pricing = pricing_of(session, client_order_id)
            priced = {"reference_price": None, "market_time": None}
            if pricing is not None:
                priced = pricing.model_dump(mode="json", include=set(priced))
            return row.model_dump(mode="json") | priced | {"fills": fills}

        found = await service.read(read)
        if found is None:
            raise HTTPException(404, f"no order {client_order_id}")
        return found

    service.publishes(
        "tranche.orders.events.{bot_id}", OrderEvent, "Order lifecycle with fills (outbox)."
    )
    service.on_start.append(lambda: reconcile(executor))
    service.background.append(executor.run)
    service.background.append(lambda: live.follow(service.nc))  # type: ignore[arg-type]
    service.http_routers.append(api)
    log.debug("executor.built", exchange=type(exchange).__name__)
    return service


def main() -> None:
    serve(build, ExecutorSettings)
