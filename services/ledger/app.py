"""Ledger service wiring.

Reads:  tranche.orders.events.<bot>      (durable, consumer ledger-order-events-v2)
        tranche.market.ticker.<product>  (core NATS: marks for unrealized P&L)
        tranche.ledger.query.<bot>       (core NATS request/reply: the current position now)
Writes: tranche.ledger.positions.<bot>   (outbox)
        tranche_positions bucket, key = bot id (outbox, after the message; only the ledger writes)
        tranche.safety.events            (outbox: TRANCHE_CAP_BREACHED when a 4th tranche fills)
        tranche.dlq.ledger               (refused input)
HTTP:   GET /positions, /positions/{bot_id}, /fills, /pnl/daily, /summary (services/ledger/api.py)

The position message and the bucket put are staged in that order in the same transaction as the
fills, and the relay sends staged rows in order. A crash between the two sends leaves the bucket
one update behind until the relay's next pass after restart (it re-sends what was not marked
sent; the stream drops the repeated message by id, and the put is the same value again).
Readers compare ``sequence`` and ignore an older position.
"""

from __future__ import annotations

from faststream.nats.annotations import NatsMessage
from prometheus_client import Counter
from pydantic import ValidationError
from sqlmodel import Session

from services.ledger.accounting import Allocation
from services.ledger.api import ledger_api
from services.ledger.booking import recompute
from services.ledger.config import LedgerSettings
from services.ledger.reports import Mark
from services.ledger.schema import migrate
from services.ledger.store import (
    FillRow,
    PositionRow,
    add_fills,
    lock_position,
    new_fills,
    position_of,
    save_position,
)
from shared import subjects
from shared.bots import LiveCatalog
from shared.bus import InvalidMessage, durable, require_subject_token
from shared.catalog import CatalogError, load_catalog
from shared.contracts import (
    OrderEvent,
    PositionAnswer,
    PositionQuery,
    PositionUpdate,
    Reason,
    SafetyEvent,
    Ticker,
)
from shared.eventtime import NewestTimes, bounds_for, check_times
from shared.logging import correlated
from shared.money import utc_now
from shared.outbox import stage
from shared.service import Service, serve
from shared.streams import LEDGER_ORDER_EVENTS

FILLS_BOOKED = Counter("tranche_ledger_fills_booked_total", "Fills booked", ["mode"])
FILLS_SEEN_AGAIN = Counter("tranche_ledger_fills_duplicate_total", "Fills already booked")
BREACHES = Counter("tranche_ledger_tranche_breaches_total", "Positions past three tranches")


def build(settings: LedgerSettings) -> Service:
    service = Service(settings, [FillRow, PositionRow], migrate=migrate)
    log = service.log
    try:
        # Bots created at run time are in the tranche_bots bucket, followed in the background.
        catalog = LiveCatalog(load_catalog(settings.config_file))
    except CatalogError as error:
        raise SystemExit(f"ledger: {error}") from None
    marks: dict[str, Mark] = {}
    # A tick far ahead of the newest (or of the clock) would become "now" for good: refused.
    ticker_times = NewestTimes(bounds_for(settings.mode), utc_now)

    def allocation_of(bot_id: str) -> Allocation:
        bot = catalog.all_bots.get(bot_id)
        return (bot.exit_allocation if bot else None) or settings.exit_allocation

    @durable(service.router, LEDGER_ORDER_EVENTS, title="ledger-order-events")
    async def on_order_event(body: OrderEvent, msg: NatsMessage) -> None:
        require_subject_token(msg, body.bot_id, "order event")
        check_times([body.time, *(fill.time for fill in body.fills)], utc_now(),
                    bounds_for(body.mode), "order event time")  # fmt: skip
        product = catalog.products.get(body.product_id)
        if product is None:
            raise InvalidMessage(
                Reason(code="UNKNOWN_PRODUCT", message=f"{body.product_id} is not a known product")
            )
        if not body.fills:
            return  # a status without fills changes no position

        def book(session: Session) -> tuple[PositionUpdate, SafetyEvent | None] | None:
            lock_position(session, body.bot_id, body.mode)  # first: later reads see every fill
            fresh = new_fills(session, body)
            if not fresh:
                return None  # every fill already booked: a redelivery or a re-publish
            held = position_of(session, body.bot_id, body.mode)
            if held is not None and held.status == "open" and held.product_id != body.product_id:
                raise InvalidMessage(  # rolls the transaction back: nothing is booked
                    Reason(
                        code="PRODUCT_MISMATCH",
                        message=f"a fill of {body.product_id} for bot {body.bot_id}, whose open "
                        f"position holds {held.product_id}: one position never mixes products",
                    )
                )
            add_fills(session, body, fresh)
            booked = recompute(
                session,
                bot_id=body.bot_id,
                mode=body.mode,
                product_id=body.product_id,
                product=product,
                allocation=allocation_of(body.bot_id),
                correlation_id=body.correlation_id,
                last_order_event_id=body.message_id,
            )
            assert booked is not None  # the fills just added are there
            save_position(session, booked.position)
            if booked.breach is not None:
                stage(session, subjects.SAFETY_EVENTS, booked.breach)
            return booked.position, booked.breach

        with correlated(body.intent_id, bot_id=body.bot_id, client_order_id=body.client_order_id):
            outcome = await service.transact(book)
            if outcome is None:
                FILLS_SEEN_AGAIN.inc(len(body.fills))
                return
            position, breach = outcome
            FILLS_BOOKED.labels(body.mode).inc(len(body.fills))
            log.info(
                "fills.booked",
                fills=len(body.fills),
                quantity=str(position.quantity),
                average_entry_price=str(position.average_entry_price),
                realized_pnl=str(position.realized_pnl),
            )
            if breach is not None:
                BREACHES.inc()
                log.warning("tranche_cap.breached", message=breach.message)

    @service.router.subscriber(subjects.all_of(subjects.MARKET_TICKER), title="ledger-ticker")
    async def on_ticker(body: Ticker) -> None:
        ticker_times.admit(body.product_id, body.time, "ticker time")
        known = marks.get(body.product_id)
        if known is None or body.time >= known.time:
            marks[body.product_id] = Mark(price=body.price, time=body.time)

    @service.broker.subscriber(subjects.all_of(subjects.LEDGER_QUERY), title="ledger-query")
    async def on_query(msg: NatsMessage) -> PositionAnswer:
        bot_id = subjects.last_token(msg.raw_message.subject)
        try:
            query = PositionQuery.model_validate_json(msg.body or b"{}")
        except ValidationError as error:
            return PositionAnswer(
                reason=Reason(code="INVALID_QUERY", message=str(error.errors()[0]["msg"]))
            )
        found = await service.read(lambda session: position_of(session, bot_id, query.mode))
        if found is None:
            return PositionAnswer(
                reason=Reason(
                    code="NO_POSITION", message=f"nothing booked for {bot_id} in {query.mode} mode"
                )
            )
        return PositionAnswer(position=found)

    service.publishes(
        "tranche.ledger.positions.{bot_id}",
        PositionUpdate,
        "The position after every change; also put in the tranche_positions bucket.",
    )
    service.publishes(
        "tranche.safety.events", SafetyEvent, "TRANCHE_CAP_BREACHED when a fourth tranche fills."
    )
    service.http_routers.append(ledger_api(service, catalog, allocation_of, marks))
    service.background.append(lambda: catalog.follow(service.nc))  # type: ignore[arg-type]
    return service


def main() -> None:
    serve(build, LedgerSettings)
