"""Ledger service wiring.

Reads:  tranche.orders.events.<bot>      (durable, consumer ledger-order-events-v1)
Writes: tranche.ledger.positions.<bot>   (outbox)
        tranche_positions bucket, key = bot id (outbox; only the ledger writes it)
        tranche.dlq.ledger               (refused input)
HTTP:   GET /positions, GET /positions/{bot_id}, GET /fills
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query
from faststream.nats.annotations import NatsMessage
from prometheus_client import Counter
from sqlmodel import Session

from services.ledger.accounting import book_fills
from services.ledger.config import LedgerSettings
from services.ledger.positions import position_message
from services.ledger.store import (
    FillRow,
    PositionRow,
    add_fills,
    as_ledger_fill,
    fills_of,
    new_fills,
    positions,
    save_position,
)
from shared.bus import InvalidMessage, durable, require_subject_token
from shared.catalog import CatalogError, load_catalog
from shared.contracts import Mode, OrderEvent, PositionUpdate, Reason
from shared.logging import correlated
from shared.service import Service, bootstrap
from shared.settings import load
from shared.streams import LEDGER_ORDER_EVENTS

FILLS_BOOKED = Counter("tranche_ledger_fills_booked_total", "Fills booked", ["mode"])
FILLS_SEEN_AGAIN = Counter("tranche_ledger_fills_duplicate_total", "Fills already booked")


def build(settings: LedgerSettings) -> Service:
    service = Service(settings, [FillRow, PositionRow])
    log = service.log
    try:
        catalog = load_catalog(settings.config_file)
    except CatalogError as error:
        raise SystemExit(f"ledger: {error}") from None

    @durable(service.router, LEDGER_ORDER_EVENTS, title="ledger-order-events")
    async def on_order_event(body: OrderEvent, msg: NatsMessage) -> None:
        require_subject_token(msg, body.bot_id, "order event")
        product = catalog.products.get(body.product_id)
        if product is None:
            raise InvalidMessage(
                Reason(code="UNKNOWN_PRODUCT", message=f"{body.product_id} is not a known product")
            )
        if not body.fills:
            return

        def book(session: Session) -> PositionUpdate | None:
            fresh = new_fills(session, body)
            if not fresh:
                return None  # every fill already booked: a redelivery or a re-publish
            add_fills(session, body, fresh)
            rows = fills_of(session, body.bot_id, body.mode)
            ledger = book_fills(
                [as_ledger_fill(row) for row in rows],
                min_size=product.base_min_size,
                size_increment=product.base_increment,
                allocation=settings.exit_allocation,
            )
            position = position_message(
                book=ledger,
                bot_id=body.bot_id,
                product_id=body.product_id,
                mode=body.mode,
                sequence=len(rows),
                time=max(row.time for row in rows),
                correlation_id=body.correlation_id,
                last_order_event_id=body.message_id,
            )
            save_position(session, position)
            return position

        with correlated(body.intent_id, bot_id=body.bot_id, client_order_id=body.client_order_id):
            position = await service.transact(book)
            if position is None:
                FILLS_SEEN_AGAIN.inc(len(body.fills))
            else:
                FILLS_BOOKED.labels(body.mode).inc(len(body.fills))
                log.info(
                    "fills.booked",
                    fills=len(body.fills),
                    quantity=str(position.quantity),
                    average_entry_price=str(position.average_entry_price),
                    realized_pnl=str(position.realized_pnl),
                )

    api = APIRouter(tags=["positions"])

    @api.get("/positions", summary="The latest position of every bot")
    async def all_positions(mode: Mode | None = None) -> list[PositionUpdate]:
        return await service.read(lambda session: positions(session, mode))

    @api.get("/positions/{bot_id}", summary="One bot's position with its tranches")
    async def one_position(bot_id: str, mode: Mode = "mock") -> PositionUpdate:
        found = [p for p in await service.read(lambda s: positions(s, mode)) if p.bot_id == bot_id]
        if not found:
            raise HTTPException(404, f"no position booked for bot {bot_id!r} in {mode} mode")
        return found[0]

    @api.get("/fills", summary="Booked fills, oldest first")
    async def fills(
        bot_id: str, mode: Mode = "mock", limit: int = Query(500, ge=1, le=10_000)
    ) -> list[dict]:
        rows = await service.read(lambda session: fills_of(session, bot_id, mode))
        return [row.model_dump(mode="json") for row in rows[-limit:]]

    service.publishes(
        "tranche.ledger.positions.{bot_id}",
        PositionUpdate,
        "The position after every change; also put in the tranche_positions bucket.",
    )
    service.http_routers.append(api)
    return service


def main() -> None:
    settings = load(LedgerSettings)
    bootstrap(settings)
    build(settings).run()
