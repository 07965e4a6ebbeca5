"""The executor's core for the outcome ring: its order sizing (``size_order``), the mock
exchange's own matching, pricing and fees (``MockExchange`` on an in-memory SQLite book, filling
at the intent's price as ``fill_at = "intent"``) and its order state machine (``advance`` on the
exchange's reports). The ledger books the fills of the order events ``advance`` emits, numbered
as the executor's outbox numbers them.

How the ring asks an order to fill:

* ``full``: a market order (the mock fills it at once, taker fee);
* ``partial``: a limit order at the intent's price; the mock fills ``PARTIAL_FILL_RATIO`` of it at
  once (taker), the rest rests and fills that share of what remains as maker when a later price
  crosses it; what is still open after the next tick is cancelled (the executor's limit
  time-to-live, one tick here), keeping its fills;
* ``fail``: the mock rejects it (its injected reject).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from services.executor.exchanges.base import ExchangeOrder, OrderRequest
from services.executor.exchanges.mock import MockExchange, MockSettings, Quote
from services.executor.orders import (
    ExchangeReport,
    OrderIdentity,
    OrderState,
    advance,
    convert_fill,
    is_final,
    limit_order_expired,
    size_order,
)
from services.ledger.accounting import LedgerFill
from shared.catalog import Product
from shared.contracts import OrderEvent, Reason, TradeIntent
from shared.db import make_engine

Fill = Literal["full", "partial", "fail"]
PARTIAL_FILL_RATIO = Decimal("0.5")
LIMIT_TTL = timedelta(microseconds=1)
"""A rest still open after the next tick's matching is cancelled (every tick moves time on)."""


@dataclass
class RingOrder:
    identity: OrderIdentity
    intent: TradeIntent
    state: OrderState
    placed_at: datetime

    @property
    def final(self) -> bool:
        return is_final(self.state.status)


class RingExchange:
    def __init__(self, product_id: str, product: Product, quote_of: Callable[[], Quote]):
        self.product_id = product_id
        self.product = product
        self.quote_of = quote_of
        self.mock = MockExchange(
            make_engine("sqlite://"),
            {product_id: product},
            None,
            lambda _product_id: quote_of(),
            MockSettings(fill_at="intent", partial_fill_ratio=PARTIAL_FILL_RATIO),
        )
        self.orders: list[RingOrder] = []
        self.events: list[OrderEvent] = []
        self._final_net: dict[str, Decimal] = {}

    def place(self, intent: TradeIntent, fill: Fill, now: datetime) -> RingOrder:
        """Size the intent as the executor does, place it on the mock, apply its answer."""
        # Ids that sort in the order things happened (readable in a failing example).
        cid = f"order-{len(self.orders):05d}"
        order = RingOrder(
            OrderIdentity(
                bot_id=intent.bot_id,
                product_id=intent.product_id,
                mode="mock",
                intent_id=intent.intent_id,
                client_order_id=cid,
                action=intent.action,
                side=intent.side,
            ),
            intent,
            OrderState(status="new"),
            now,
        )
        self.orders.append(order)
        order_type = "limit" if fill == "partial" else "market"
        spec = size_order(
            order_type=order_type,
            side=intent.side,
            quote_size=intent.quote_size,
            base_size=intent.base_size,
            limit_price=intent.reference_price or self.quote_of().price,
            reference_price=intent.reference_price,
            product=self.product,
        )
        if isinstance(spec, Reason):  # refused before the exchange, as the executor does
            refused = ExchangeReport("", "FAILED", reason=spec, number_of_fills=0)
            self._advance(order, refused, now)
            return order
        if fill == "fail":
            self.mock.queued_faults.append("reject")
        request = OrderRequest(
            client_order_id=cid,
            product_id=intent.product_id,
            side=intent.side,
            order_type=spec.order_type,
            quote_size=spec.quote_size,
            base_size=spec.base_size,
            limit_price=spec.limit_price,
            reference_price=intent.reference_price,
            market_time=intent.market_time,
        )
        self._apply(order, self.mock.place(request), now)
        return order

    def on_tick(self, now: datetime) -> None:
        """A new price: the mock matches resting orders; a rest still open is cancelled."""
        self.mock.on_quote(self.product_id)
        for order in self.orders:
            if order.final:
                continue
            answer = self.mock.get(order.state.exchange_order_id or "")
            if answer.status == "OPEN" and limit_order_expired(order.placed_at, LIMIT_TTL, now):
                self.mock.cancel(answer.exchange_order_id)
                answer = self.mock.get(answer.exchange_order_id)
            self._apply(order, answer, now)

    def _apply(self, order: RingOrder, answer: ExchangeOrder, now: datetime) -> None:
        fills = tuple(convert_fill(fill) for fill in self.mock.fills(answer.exchange_order_id))
        report = ExchangeReport(
            exchange_order_id=answer.exchange_order_id,
            status=answer.status,
            fills=fills,
            number_of_fills=answer.number_of_fills,
        )
        self._advance(order, report, now)

    def _advance(self, order: RingOrder, report: ExchangeReport, now: datetime) -> None:
        step = advance(order.identity, order.state, report, now)
        order.state = OrderState(step.status, step.fills, report.exchange_order_id or None)
        for event in step.events:
            self.events.append(event.model_copy(update={"sequence": len(self.events) + 1}))

    def net_filled(self) -> Decimal:
        """What the mock's own book says was bought less what was sold (base); a final order's
        share is read once (the mock adds no fill to a final order)."""
        net = Decimal(0)
        for order in self.orders:
            exchange_order_id = order.state.exchange_order_id
            if exchange_order_id is None:
                continue  # refused before the exchange
            share = self._final_net.get(exchange_order_id)
            if share is None:
                sizes = (convert_fill(fill).size for fill in self.mock.fills(exchange_order_id))
                share = sum(sizes, Decimal(0)) * (1 if order.intent.side == "buy" else -1)
                if order.final:
                    self._final_net[exchange_order_id] = share
            net += share
        return net

    def ledger_fills(self) -> list[LedgerFill]:
        """Every fill of the published order events, as the ledger stores them."""
        return [
            LedgerFill(
                trade_id=fill.trade_id,
                entry_id=fill.entry_id,
                trade_type=fill.trade_type,
                sequence=event.sequence,
                index=index,
                client_order_id=event.client_order_id,
                side=event.side,
                price=fill.price,
                size=fill.size,
                fee=fill.fee,
                time=fill.time,
            )
            for event in self.events
            for index, fill in enumerate(event.fills)
        ]
