"""Reconciliation on start: the store and the exchange agree again before new approvals arrive.

* every order the store says is not final is resumed (polled at once);
* every order open on the exchange with our ``client_order_id`` prefix that the store does not
  know (a store restored from an older backup, another instance's lost record) is adopted:
  recorded, polled and reported with a ``submitted`` event whose reason is ``ADOPTED``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlmodel import Session, select

from services.executor.exchanges.base import ExchangeError, ExchangeOrder
from services.executor.protective import STOP, OrderStopRow
from services.executor.states import NEW
from services.executor.store import OrderRow, open_orders
from shared.bots import LiveCatalog
from shared.catalog import Catalog
from shared.logging import get_logger

if TYPE_CHECKING:
    from services.executor.sync import Executor

log = get_logger("tranche.executor")
UNATTRIBUTED = "unattributed"


def bot_for(catalog: Catalog | LiveCatalog, product_id: str) -> str:
    """The bot an adopted order is booked to: the one bot trading its product, if exactly one."""
    bots = [name for name, bot in catalog.bots.items() if bot.product_id == product_id]
    return bots[0] if len(bots) == 1 else UNATTRIBUTED


def adopted_order(
    found: ExchangeOrder,
    prefix: str,
    catalog: Catalog | LiveCatalog,
    mode: str,
    ttl_s: int,
    now: datetime,
) -> OrderRow:
    side = found.side.lower()
    cid = found.client_order_id.removeprefix(prefix)
    stop = found.stop_price is not None
    return OrderRow(
        client_order_id=cid,
        exchange_client_order_id=found.client_order_id,
        intent_id=cid,
        bot_id=bot_for(catalog, found.product_id),
        product_id=found.product_id,
        mode=mode,
        action="entry" if side == "buy" else "exit",
        side=side,
        order_type=STOP if stop else "limit",  # only resting orders are open
        base_size=found.base_size,
        limit_price=found.limit_price,
        decided_at=found.created_time or now,
        status=NEW,
        exchange_order_id=found.exchange_order_id,
        adopted=True,
        # From adoption on, a limit order nobody remembers placing does not rest forever; a
        # protective stop rests by design (cancelled as a limit past its time-to-live, it left
        # the position without its stop).
        ttl_s=None if stop else ttl_s,
    )


async def reconcile(executor: Executor) -> None:
    """Resume every order that is not final, and adopt ours the exchange has open."""
    unfinished = await executor.service.read(open_orders)
    for order in unfinished:
        executor.schedule(order.client_order_id)
    log.info("orders.resuming", count=len(unfinished))
    await adopt(executor)


async def adopt(executor: Executor) -> int:
    """Adopt our open exchange orders the store does not know; returns how many. An exchange that
    cannot be asked now is asked again later (``executor.adoption_pending``)."""
    try:
        listed = await executor.gateway.call("list_orders", executor.exchange.open_orders)
    except ExchangeError as error:
        log.warning("orders.adoption_postponed", code=error.code, error=error.message)
        return 0
    settings = executor.settings
    prefix = settings.client_order_prefix
    ours = [order for order in listed if order.client_order_id.startswith(prefix)]

    def add_unknown(session: Session) -> list[str]:
        adopted = []
        for found in ours:
            known = session.exec(
                select(OrderRow.client_order_id).where(
                    OrderRow.exchange_client_order_id == found.client_order_id
                )
            ).first()
            row = adopted_order(
                found, prefix, executor.catalog, settings.mode, settings.limit_order_ttl_s,
                executor.clock(),
            )  # fmt: skip
            if known is None and session.get(OrderRow, row.client_order_id) is None:
                session.add(row)
                if found.stop_price is not None:
                    session.add(OrderStopRow(client_order_id=row.client_order_id,
                                             stop_price=found.stop_price))  # fmt: skip
                adopted.append(row.client_order_id)
        return adopted

    adopted = await executor.service.transact(add_unknown)
    executor.adoption_pending = False
    for cid in adopted:
        log.warning("order.adopted", client_order_id=cid)
        executor.schedule(cid)
    return len(adopted)
