"""Ledger service wiring.

Reads:  tranche.orders.events.<bot>      (durable, consumer ledger-order-events-v2; booked only
                                         with the executor's signature, else dead-lettered
                                         as ORDER_EVENT_NOT_SIGNED: shared/signing.py)
        tranche.market.ticker.<product>  (core NATS: marks for unrealized P&L)
        tranche.ledger.query.<bot>       (core NATS request/reply: the current position now)
Writes: tranche.ledger.positions.<bot>   (outbox)
        tranche_positions bucket, key = bot id (outbox, after the message; only the ledger writes)
        tranche.ledger.breaches.<bot>    (outbox: a 4th tranche filled; safety reports it)
        tranche.dlq.ledger               (refused input)
HTTP:   GET /positions, /positions/{bot_id}, /fills, /pnl/daily, /summary (services/ledger/api.py)

The position message and the bucket put are staged in that order in the same transaction as the
fills, and the relay sends staged rows in order. A crash between the two sends leaves the bucket
one update behind until the relay's next pass after restart (it re-sends what was not marked
sent; the stream drops the repeated message by id, and the put is the same value again).
Readers compare ``sequence`` and ignore an older position.
"""

from __future__ import annotations

from prometheus_client import Counter
from pydantic import ValidationError

from services.ledger.accounting import Allocation
from services.ledger.api import ledger_api
from services.ledger.config import LedgerSettings
from services.ledger.handling import book_order_event
from services.ledger.reports import Mark
from services.ledger.schema import migrate
from services.ledger.store import (
    TABLES,
    Conflict,
    position_of,
)
from shared import subjects
from shared.bots import LiveCatalog
from shared.bus import (
    InvalidMessage,
    durable,
    handled_message,
    require_executors_signature,
    require_subject_token,
)
from shared.catalog import CatalogError, load_catalog
from shared.contracts import (
    OrderEvent,
    PositionAnswer,
    PositionQuery,
    PositionUpdate,
    Reason,
    Ticker,
    TrancheCapBreach,
)
from shared.eventtime import NewestTimes, bounds_for, check_times
from shared.logging import correlated
from shared.money import utc_now
from shared.service import Service, serve
from shared.streams import LEDGER_ORDER_EVENTS

FILLS_BOOKED = Counter("tranche_ledger_fills_booked_total", "Fills booked", ["mode"])
FILLS_SEEN_AGAIN = Counter("tranche_ledger_fills_duplicate_total", "Fills already booked")
FILL_CONFLICTS = Counter(
    "tranche_ledger_fill_conflicts_total",
    "Fills refused (to the DLQ as FILL_CONFLICT): a booked fill with their key says otherwise",
)
BREACHES = Counter("tranche_ledger_tranche_breaches_total", "Positions past three tranches")


def build(settings: LedgerSettings) -> Service:
    order_events = settings.order_event_verifier()
    service = Service(settings, TABLES, migrate=migrate)
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
    async def on_order_event(body: OrderEvent) -> None:
        msg = handled_message(service.broker)
        require_executors_signature(order_events, msg)
        require_subject_token(msg, body.bot_id, "order event")
        check_times([body.time, *(fill.time for fill in body.fills)], utc_now(),
                    bounds_for(body.mode), "order event time")  # fmt: skip
        product = catalog.products.get(body.product_id)
        if product is None:
            raise InvalidMessage(
                Reason(code="UNKNOWN_PRODUCT", message=f"{body.product_id} is not a known product")
            )

        with correlated(body.intent_id, bot_id=body.bot_id, client_order_id=body.client_order_id):
            outcome = await service.transact(
                lambda session: book_order_event(
                    session, body, product, allocation_of(body.bot_id), catalog.products
                )
            )
            if isinstance(outcome, Conflict):
                FILL_CONFLICTS.inc()
                log.error(
                    "fill.conflict",
                    fill_key=outcome.key,
                    booked={k: str(v) for k, v in outcome.booked.items()},
                    incoming={k: str(v) for k, v in outcome.incoming.items()},
                )
                raise InvalidMessage(Reason(code="FILL_CONFLICT", message=outcome.sentence()[:500]))
            if outcome is None:
                FILLS_SEEN_AGAIN.inc(len(body.fills))
                return
            position, breach, booked_now = outcome
            FILLS_BOOKED.labels(body.mode).inc(booked_now)
            FILLS_SEEN_AGAIN.inc(len(body.fills) - booked_now)
            log.info(
                "fills.booked",
                fills=booked_now,
                quantity=str(position.quantity),
                average_entry_price=str(position.average_entry_price),
                realized_pnl=str(position.realized_pnl),
            )
            if breach is not None:
                BREACHES.inc()
                log.warning("tranche_cap.breached", message=breach.message)

    @service.router.subscriber(
        subjects.all_of(subjects.MARKET_TICKER), title="ledger-ticker", no_reply=True
    )
    async def on_ticker(body: Ticker) -> None:
        ticker_times.admit(body.product_id, body.time, "ticker time")
        known = marks.get(body.product_id)
        if known is None or body.time >= known.time:
            marks[body.product_id] = Mark(price=body.price, time=body.time)

    @service.broker.subscriber(subjects.all_of(subjects.LEDGER_QUERY), title="ledger-query")
    async def on_query() -> PositionAnswer:
        msg = handled_message(service.broker)
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
        "tranche.ledger.breaches.{bot_id}",
        TrancheCapBreach,
        "A fourth entry tranche was booked; safety reports it as TRANCHE_CAP_BREACHED.",
    )
    service.http_routers.append(ledger_api(service, catalog, allocation_of, marks))
    # nc is connected before background jobs start
    service.background.append(lambda: catalog.follow(service.nc))  # type: ignore[arg-type]
    return service


def main() -> None:
    serve(build, LedgerSettings)
