"""On start, the mock exchange catches up on the prices it missed while the executor was down.

The mock lives in the executor's process, so while the executor is down nothing matches its
resting orders; a real exchange would have kept trading. To model that, the executor, before it
takes any new price or approval, reads the market prices kept in ``TRANCHE_MARKET`` since its
oldest resting order was recorded, and the mock matches them in event-time order, each at its own
event time (:meth:`services.executor.exchanges.mock.MockExchange.catch_up`): a stop the price fell
through while the stack was down fills at that tick's price and time. Prices older than the
stream keeps (a day) or lost with the NATS server are gone: the mock then matches from the first
price it hears. Production needs none of this: Coinbase kept trading.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import datetime

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import ConsumerConfig, DeliverPolicy
from pydantic import ValidationError
from sqlmodel import Session, col, select

from services.executor.exchanges.mock import MockExchange, Quote
from services.executor.store import OrderRow
from shared import subjects
from shared.contracts import FINAL_ORDER_STATUSES, Ticker
from shared.logging import get_logger
from shared.streams import MARKET

log = get_logger("tranche.executor")
READ_TIMEOUT_S = 2.0


def resting_since(session: Session) -> dict[str, datetime]:
    """Per product with orders that are not final, when the oldest of them was recorded (wall
    clock: the stream's own clock)."""
    rows = session.exec(
        select(OrderRow.product_id, OrderRow.created_at).where(
            col(OrderRow.status).not_in(list(FINAL_ORDER_STATUSES))
        )
    ).all()
    since: dict[str, datetime] = {}
    for product_id, created_at in rows:
        since[product_id] = min(created_at, since.get(product_id, created_at))
    return since


async def missed_prices(nc: Client, product_id: str, since: datetime) -> list[Quote]:
    """Every price of ``product_id`` the stream received since ``since`` (an ordered consumer:
    nothing acknowledged, nothing left behind)."""
    js = nc.jetstream()
    subscription = await js.subscribe(
        subjects.for_token(subjects.MARKET_TICKER, product_id),
        stream=MARKET.name,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since),
    )
    quotes: list[Quote] = []
    try:
        while True:
            try:
                msg = await subscription.next_msg(timeout=READ_TIMEOUT_S)
            except NatsTimeout:
                break  # nothing more (or nothing kept)
            try:
                tick = Ticker.model_validate_json(msg.data)
            except ValidationError:
                continue  # refused when it was live too
            quotes.append(Quote(price=tick.price, time=tick.time))
            if msg.metadata.num_pending == 0:
                break
    finally:
        await subscription.unsubscribe()
    return quotes


async def catch_up(nc: Client, mock: MockExchange, since: dict[str, datetime]) -> int:
    """Match the mock's resting orders against the prices it missed; returns the fills made."""
    made = 0
    by_product: dict[str, list[Quote]] = defaultdict(list)
    for product_id, start in since.items():
        try:
            by_product[product_id] = await missed_prices(nc, product_id, start)
        except Exception as error:  # no stream, no permission: match from the next price on
            log.warning("mock.catch_up_unavailable", product_id=product_id, error=repr(error))
    for product_id, quotes in by_product.items():
        if quotes:
            made += await asyncio.to_thread(mock.catch_up, product_id, quotes)
            log.info("mock.caught_up", product_id=product_id, prices=len(quotes), fills=made)
    return made
