"""Executor service wiring.

Reads:  tranche.orders.approved.<bot>     (durable, consumer executor-approved-v2)
        tranche.safety.events             (durable, consumer executor-safety-events-v2: halts
                                          and the trading state, services/executor/trading.py)
Approvals and safety events count only with safety's signature (shared/signing.py); anything
else is dead-lettered (APPROVAL_NOT_SIGNED, SAFETY_EVENT_NOT_SIGNED). The executor signs its
order events with its own key (TRANCHE_ORDER_SIGNING_KEY): their readers believe no others.
        tranche.market.ticker.<product>   (core NATS: the mock exchange's prices)
Writes: tranche.orders.events.<bot>       (outbox)
        tranche.dlq.executor              (refused input)
HTTP:   GET /orders                       recent orders and their status
        GET /orders/{client_order_id}     one order with its fills and the intent's price
        GET /stops                        the protective stop orders not yet final, per bot

The rules are in ``orders.py`` (pure), placing and status sync in ``sync.py``, the exchanges in
``exchanges/`` (mock by default; Coinbase only with all three of the production opt-in).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from prometheus_client import Gauge
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.executor.catchup import catch_up, resting_since
from services.executor.config import ExecutorSettings
from services.executor.exchanges.mock import MockExchange, Quote
from services.executor.gateway import Gateway
from services.executor.health import ExchangeHealth
from services.executor.listing import Listing
from services.executor.protective import held_stops
from services.executor.ratelimit import RateLimiter
from services.executor.reconcile import reconcile
from services.executor.store import (
    OrderRow,
    fills_of,
    intent_reason_of,
    intent_reasons_of,
    pricing_of,
    reasons_of,
    recent_orders,
)
from services.executor.sync import Executor
from services.executor.tables import SERVICE_TABLES
from shared import subjects
from shared.bots import LiveCatalog
from shared.bus import durable, handled_message, require_signature, require_subject_token
from shared.catalog import CatalogError, load_catalog
from shared.contracts import Fill, OrderApproved, OrderEvent, SafetyEvent, Ticker
from shared.eventtime import NewestTimes, bounds_for
from shared.http import answers, bearer_guard
from shared.money import NonNegativeDec, PositiveDec, utc_now
from shared.service import Service, serve
from shared.signing import key_or_exit, signer_from
from shared.stops import HeldStop
from shared.streams import EXECUTOR_APPROVED, EXECUTOR_SAFETY_EVENTS

EXCHANGE_STATES = ("reachable", "degraded", "unreachable", "refused")
EXCHANGE_STATE = Gauge(
    "tranche_executor_exchange_state",
    "1 for how the exchange answers now: reachable, degraded (429/5xx/timeouts), unreachable "
    "(degraded with no answer for a while) or refused (401/403)",
    ["state"],
)


class ResolveRequest(BaseModel):
    """``tranche orders resolve``: how an order the exchange lost ended, and why we know."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    settled_as: Literal["cancelled", "filled"] = Field(alias="as")
    reason: str = Field(min_length=3, max_length=300)
    operator: str = Field(default="http", min_length=1, max_length=64)
    size: PositiveDec | None = None
    """``filled``: the base size the exchange filled."""
    price: PositiveDec | None = None
    """``filled``: the average fill price."""
    fee: NonNegativeDec = Decimal(0)
    """``filled``: the fee paid, quote currency."""

    @model_validator(mode="after")
    def _filled_needs_its_fill(self) -> ResolveRequest:
        # Neither: the order's fills are all booked already (found in the list of fills); the
        # executor refuses (NO_FILL) when none is.
        if self.settled_as == "filled" and (self.size is None) != (self.price is None):
            raise ValueError("settling as filled takes both the size and the price filled")
        return self


class ExchangeNotReady(Exception):
    """The exchange refuses the key or has not answered for a while (``/ready`` says why)."""


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
    verifier = settings.safety_verifier("it places only approvals signed by safety's key")
    order_key = settings.order_signing_key
    signer = key_or_exit(
        "executor",
        "the ledger, safety and the signal act only on order events the executor signed",
        lambda: signer_from(
            order_key.get_secret_value() if order_key else None,
            settings.order_signing_key_file,
            "TRANCHE_ORDER_SIGNING_KEY",
        ),
    )
    service = Service(settings, SERVICE_TABLES)
    service.sign = signer.headers  # every order event, in the outbox
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
    health = ExchangeHealth(unreachable_after_s=settings.exchange_unreachable_after_s)

    def observe(error) -> None:
        before = health.state
        health.record(error, time.monotonic())
        if health.state != before:
            for state in EXCHANGE_STATES:
                EXCHANGE_STATE.labels(state).set(1 if state == health.state else 0)
            log.warning("exchange.health", state=health.state, reason=health.reason)

    gateway.observer = observe

    async def exchange_ready() -> str | None:
        if not health.ready:
            raise ExchangeNotReady(health.describe())
        return None if health.state == "reachable" else health.describe()

    service.ready_checks["exchange"] = exchange_ready

    def market_time(product_id: str):
        quote = quotes.get(product_id)
        return quote.time if quote is not None and mock else None

    # Bots created at run time are in the tranche_bots bucket: adopted orders look them up there.
    live = LiveCatalog(catalog)
    # Production sizes by the exchange's product rules (get_product), mock by the bots file's.
    listing = None
    if hasattr(exchange, "product") and not mock:
        listing = Listing(
            service,
            gateway,
            lambda: list(live.products),
            timedelta(seconds=settings.product_rules_refresh_s),
        )
    executor = Executor(
        service,
        settings,
        live,
        gateway,
        event_clock=market_time,
        stamp_at_intent=mock and settings.mock_fill_at == "intent",
        listing=listing,
    )
    service.executor = executor  # type: ignore[attr-defined]  # for tests and operators

    @durable(service.router, EXECUTOR_APPROVED, title="executor-approved")
    async def on_approved(body: OrderApproved) -> None:
        msg = handled_message(service.broker)
        require_subject_token(msg, body.intent.bot_id, "approval")
        require_signature(
            verifier, msg, "APPROVAL_NOT_SIGNED", "an approval without safety's valid signature"
        )
        await executor.on_approval(body)

    @durable(service.router, EXECUTOR_SAFETY_EVENTS, title="executor-safety-events")
    async def on_safety_event(body: SafetyEvent) -> None:
        msg = handled_message(service.broker)
        require_signature(
            verifier,
            msg,
            "SAFETY_EVENT_NOT_SIGNED",
            "a safety event without safety's valid signature",
        )
        await executor.on_safety_event(body)

    @service.router.subscriber(
        subjects.all_of(subjects.MARKET_TICKER), title="executor-ticker", no_reply=True
    )
    async def on_ticker(body: Ticker) -> None:
        ticker_times.admit(body.product_id, body.time, "ticker time")
        known = quotes.get(body.product_id)
        if known is not None and body.time < known.time:
            return
        quotes[body.product_id] = Quote(price=body.price, time=body.time)
        if mock and await asyncio.to_thread(exchange.on_quote, body.product_id):
            executor.poll_all_now()  # resting orders filled: report it now, not at the next poll

    api = APIRouter(tags=["orders"])

    @api.get(
        "/orders",
        summary="Recent orders, newest first, each with why it was asked and why it ended",
    )
    async def orders(limit: int = Query(50, ge=1, le=1000)) -> list[dict]:
        def read(session):
            rows = recent_orders(session, limit)
            ids = [row.client_order_id for row in rows]
            reasons, asked = reasons_of(session, ids), intent_reasons_of(session, ids)
            return [
                row.model_dump(mode="json")
                | {
                    "reason": reasons.get(row.client_order_id),
                    "intent_reason": asked.get(row.client_order_id),
                }
                for row in rows
            ]

        return await service.read(read)

    @api.get(
        "/stops",
        summary="The protective stop orders not yet final (resting, asked, or being cancelled)",
    )
    async def stops() -> list[HeldStop]:
        return await service.read(held_stops)

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
            reason = reasons_of(session, [client_order_id]).get(client_order_id)
            asked = intent_reason_of(session, client_order_id)
            return row.model_dump(mode="json") | priced | {
                "fills": fills, "reason": reason, "intent_reason": asked,
            }  # fmt: skip

        found = await service.read(read)
        if found is None:
            raise HTTPException(404, f"no order {client_order_id}")
        return found

    @api.post(
        "/orders/{client_order_id}/resolve",
        summary="Settle an order the exchange lost (unknown_at_exchange) by hand, audited",
        responses=answers(401, 403, 404, 409),
        dependencies=[
            Depends(bearer_guard(settings.control_token, "TRANCHE_CONTROL_TOKEN", "resolving"))
        ],
    )
    async def resolve(client_order_id: str, request: ResolveRequest) -> dict:
        fill = None
        if request.settled_as == "filled" and request.size is not None:
            fill = Fill(
                trade_id=f"resolved-{client_order_id}",
                entry_id=f"resolved-{client_order_id}",
                price=request.price,  # checked by ResolveRequest
                size=request.size,
                fee=request.fee,
                time=utc_now(),
            )
        refused = await executor.resolve(
            client_order_id, request.settled_as, request.reason, request.operator, fill
        )
        if refused is not None:
            raise HTTPException(409, f"{refused.code}: {refused.message}")
        return {"client_order_id": client_order_id, "status": request.settled_as}

    service.publishes(
        "tranche.orders.events.{bot_id}", OrderEvent, "Order lifecycle with fills (outbox)."
    )
    if listing is not None:
        service.background.append(  # at start, then on the schedule; a heartbeat when quiet
            lambda: listing.keep_current(settings.exchange_check_s, lambda: health.last_answer_at)
        )
    if mock:
        # Before any new price or approval: the prices the mock missed while the executor was
        # down, matched at their own event times (services/executor/catchup.py).
        async def mock_catches_up() -> None:
            assert service.nc is not None  # connected before on_start hooks run
            since = await service.read(resting_since)
            if since:
                await catch_up(service.nc, exchange, since)

        service.on_start.append(mock_catches_up)
    service.on_start.append(lambda: reconcile(executor))
    service.background.append(executor.run)
    # nc is connected before background jobs start
    service.background.append(lambda: live.follow(service.nc))  # type: ignore[arg-type]
    service.http_routers.append(api)
    log.debug("executor.built", exchange=type(exchange).__name__)
    return service


def main() -> None:
    serve(build, ExecutorSettings)
