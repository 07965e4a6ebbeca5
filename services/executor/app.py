"""Executor service wiring.

Reads:  tranche.orders.approved.<bot>     (durable, consumer executor-approved-v1)
        tranche.market.ticker.<product>   (core NATS: the mock exchange's prices)
Writes: tranche.orders.events.<bot>       (outbox)
        tranche.dlq.executor              (refused input)
HTTP:   GET /orders                       recent orders and their status

An order is recorded (status ``new``) before it goes to the exchange and updated after the answer;
a redelivered approval or a restart in between asks the exchange again with the same
``client_order_id``, which answers with the existing order instead of placing a second one.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query
from faststream.nats.annotations import NatsMessage
from prometheus_client import Counter, Histogram
from sqlmodel import Session

from services.executor.config import ExecutorSettings
from services.executor.exchanges.mock import MockExchange, MockOrderRow, Quote
from services.executor.orders import lifecycle_events, refusal_event
from services.executor.store import OrderRow, is_final, open_orders, recent_orders, record_event
from shared import subjects
from shared.bus import durable, require_subject_token
from shared.catalog import CatalogError, load_catalog
from shared.contracts import OrderApproved, OrderEvent, Reason, Ticker
from shared.logging import correlated
from shared.money import utc_now
from shared.service import Service, bootstrap
from shared.settings import load
from shared.streams import EXECUTOR_APPROVED

ORDERS = Counter("tranche_executor_orders_total", "Exchange answers", ["status", "reason"])
EXCHANGE_SECONDS = Histogram("tranche_executor_exchange_seconds", "Time to place an order")


def build(settings: ExecutorSettings) -> Service:
    if settings.mode == "production":
        raise SystemExit(
            "executor: production mode needs the Coinbase adapter, which is not built yet; "
            "set TRANCHE_MODE=mock"
        )
    service = Service(settings, [OrderRow, MockOrderRow])
    log = service.log
    try:
        catalog = load_catalog(settings.config_file)
    except CatalogError as error:
        raise SystemExit(f"executor: {error}") from None
    quotes: dict[str, Quote] = {}
    exchange = MockExchange(service.engine, catalog.products, settings.mock_fee_rate, quotes.get)

    async def execute(approval: OrderApproved) -> None:
        intent = approval.intent
        cid = approval.client_order_id

        def record_before(session: Session) -> OrderRow | None:
            order = session.get(OrderRow, cid)
            if order is not None and is_final(order):
                return None
            if order is None:
                order = OrderRow(
                    client_order_id=cid,
                    intent_id=intent.intent_id,
                    bot_id=intent.bot_id,
                    product_id=intent.product_id,
                    mode=approval.mode,
                    action=intent.action,
                    side=intent.side,
                    quote_size=intent.quote_size,
                    base_size=intent.base_size,
                    status="new",
                )
                if approval.mode != settings.mode:
                    reason = Reason(
                        code="MODE_MISMATCH",
                        message=(
                            f"approved for {approval.mode}, "
                            f"but this executor trades {settings.mode}"
                        ),
                    )
                    record_event(session, order, refusal_event(approval, reason))
                    return None
                session.add(order)
            return order

        with correlated(intent.intent_id, bot_id=intent.bot_id, client_order_id=cid):
            order = await service.transact(record_before)
            if order is None:
                log.info("order.already_final_or_refused")
                return
            with EXCHANGE_SECONDS.time():
                answer = await asyncio.to_thread(
                    exchange.place_market_order,
                    client_order_id=cid,
                    product_id=intent.product_id,
                    side=intent.side,
                    quote_size=intent.quote_size,
                    base_size=intent.base_size,
                )

            def record_after(session: Session) -> None:
                current = session.get(OrderRow, cid)
                if current is None or is_final(current):
                    return
                for event in lifecycle_events(
                    approval=approval,
                    exchange_order_id=answer.exchange_order_id,
                    status=answer.status,
                    fills=answer.fills,
                    reason=answer.reason,
                    fallback_time=approval.time,
                ):
                    record_event(session, current, event)

            await service.transact(record_after)
            ORDERS.labels(answer.status, answer.reason.code if answer.reason else "").inc()
            log.info(
                "order.placed",
                status=answer.status,
                fills=len(answer.fills),
                reason=answer.reason.code if answer.reason else None,
            )

    @durable(service.router, EXECUTOR_APPROVED, title="executor-approved")
    async def on_approved(body: OrderApproved, msg: NatsMessage) -> None:
        require_subject_token(msg, body.intent.bot_id, "approval")
        await execute(body)

    @service.router.subscriber(subjects.all_of(subjects.MARKET_TICKER), title="executor-ticker")
    async def on_ticker(body: Ticker) -> None:
        known = quotes.get(body.product_id)
        if known is None or body.time >= known.time:
            quotes[body.product_id] = Quote(price=body.price, time=body.time)

    async def report_unfinished() -> None:
        # Orders recorded but not final when the process last stopped: their approvals are
        # redelivered (they were not acknowledged), and execute() resumes each one.
        unfinished = await service.read(open_orders)
        if unfinished:
            log.info("orders.resuming", count=len(unfinished), at=utc_now().isoformat())

    api = APIRouter(tags=["orders"])

    @api.get("/orders", summary="Recent orders, newest first")
    async def orders(limit: int = Query(50, ge=1, le=1000)) -> list[dict]:
        rows = await service.read(lambda session: recent_orders(session, limit))
        return [row.model_dump(mode="json") for row in rows]

    service.publishes(
        "tranche.orders.events.{bot_id}", OrderEvent, "Order lifecycle with fills (outbox)."
    )
    service.on_start.append(report_unfinished)
    service.http_routers.append(api)
    return service


def main() -> None:
    settings = load(ExecutorSettings)
    bootstrap(settings)
    build(settings).run()
