"""Placing orders and keeping them in sync with the exchange until they are final.

* An approval is recorded (``new``) before the order goes out and every answer after; a
  redelivered approval or a restart in between never places a second order: the exchange answers
  a repeated ``client_order_id`` with the existing order, and an order whose placing had an
  unknown outcome (a timeout, a 5xx storm) is looked up by ``client_order_id`` before anything else.
* Every non-final order is polled (``get_order``, then ``get_fills`` when the exchange counts
  fills we do not have) with a backoff that doubles while nothing changes, up to a cap; each change
  is stored with the events it means in one transaction (:func:`services.executor.orders.advance`).
* A limit order not filled within its time-to-live, and every order a halt covers, is cancelled;
  the cancellation is reported with why, and fills before it are booked.
* On start (:mod:`services.executor.reconcile`) every order the store says is not final is
  resumed, and an open order on the exchange with our prefix that the store does not know is
  adopted and reported.
* With several instances on one database, an instance acts only on the orders it holds the claim
  of (:mod:`services.executor.claims`), and takes over those of an instance that stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from prometheus_client import Counter, Gauge
from sqlmodel import Session

from services.executor.claims import HEARTBEAT_S, Claims
from services.executor.config import ExecutorSettings
from services.executor.exchanges.base import (
    ExchangeError,
    ExchangeOrder,
    OrderNotFound,
    OrderRefused,
    OrderRequest,
)
from services.executor.gateway import Gateway
from services.executor.listing import Listing
from services.executor.orders import (
    Advance,
    ExchangeFill,
    ExchangeReport,
    OpenOrder,
    advance,
    cancels_for,
    convert_fill,
    is_final,
    limit_order_expired,
    quote_includes_fee,
    refusal_event,
    refusal_reason,
    size_order,
    unrecognised_fills,
)
from services.executor.polling import Due, RequestBudget
from services.executor.products import ProductRules, above_maximum, tradable_refusal
from services.executor.protective import (
    CANCEL_FOR_SELL,
    OrderStopRow,
    exchange_order_type,
    halt_cancels,
    poll_cap_s,
    sell_gate,
    stop_price_of,
    store_order_type,
)
from services.executor.reconcile import adopt
from services.executor.states import (
    CANCEL_ASKED,
    NEW,
    NOT_FOUND,
    RESOLVED_CANCELLED,
    RESOLVED_FILLED,
    UNKNOWN_AT_EXCHANGE,
    Refusal,
    transition,
)
from services.executor.store import (
    OrderIntentReasonRow,
    OrderPricingRow,
    OrderRow,
    apply,
    identity,
    identity_fields,
    intent_reason_of,
    open_orders,
    order_of,
    pricing_of,
    record_event,
    state_of,
    status_of,
)
from services.executor.trading import placement_block, record_state, states_for
from shared.bots import LiveCatalog
from shared.catalog import Catalog
from shared.contracts import Fill, OrderApproved, OrderEvent, Reason, SafetyEvent
from shared.db import insert_row
from shared.logging import correlated, get_logger
from shared.money import utc_now
from shared.service import Service

log = get_logger("tranche.executor")
T = TypeVar("T")

ORDER_EVENTS = Counter("tranche_executor_order_changes_total", "Order status changes", ["status"])
OPEN_ORDERS = Gauge("tranche_executor_open_orders", "Orders not final yet")
POLLS = Counter("tranche_executor_polls_total", "Order status polls", ["outcome"])
CANCELS = Counter("tranche_executor_cancel_requests_total", "Cancels asked", ["outcome"])
LOST_ORDERS = Gauge(
    "tranche_executor_orders_unknown_at_exchange",
    "Orders the exchange accepted and now answers 404 for, past the grace period (an alert)",
)
STATUS_ALERTS = Counter(
    "tranche_executor_status_alerts_total",
    "Exchange reports refused with an alert (an unknown status, a final order contradicted, a "
    "fill of an unknown type)",
    ["code"],
)
LOOKBACK = timedelta(minutes=10)  # how far before its record an order is looked up by id


WAIT_FOR_FILLS_POLLS = 10  # then an order the exchange says is final is made final anyway


@dataclass(frozen=True, slots=True)
class Terms:
    """What an order was asked with that never changes once it is recorded (its intent's price,
    market time and reason, a stop's stop price): read once per order, not in every
    transaction."""

    reference_price: Decimal | None = None
    market_time: datetime | None = None
    stop_price: Decimal | None = None
    intent_reason: str | None = None
    """The reason code of the order's intent (``None``: an adopted order has none)."""


class Executor:
    def __init__(
        self,
        service: Service,
        settings: ExecutorSettings,
        catalog: Catalog | LiveCatalog,
        gateway: Gateway,
        *,
        clock: Callable[[], datetime] = utc_now,
        event_clock: Callable[[str], datetime | None] = lambda _product: None,
        monotonic: Callable[[], float] = time.monotonic,
        stamp_at_intent: bool = False,
        claims: Claims | None = None,
        listing: Listing | None = None,
    ):
        """``stamp_at_intent``: events without fills carry the market time of the order's intent
        instead of the market's latest (the mock filling at the intent's price: replays)."""
        self.service = service
        self.claims = claims or Claims(service.engine)
        self.listing = listing
        """The exchange's product rules (production); ``None``: the bots file's (mock)."""
        self.settings = settings
        self.catalog = catalog
        self.gateway = gateway
        self.exchange = gateway.exchange
        self.clock = clock
        self._event_clock = event_clock
        self._monotonic = monotonic
        self.stamp_at_intent = stamp_at_intent
        self._due: dict[str, Due] = {}
        self._budgets: dict[str, RequestBudget] = {}
        self._lost: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._terms: dict[str, Terms] = {}
        self._wake = asyncio.Event()
        self.adoption_pending = True

    # -- helpers ------------------------------------------------------------------------------

    def event_now(self, product_id: str) -> datetime:
        """Event time: the market's clock in mock mode (replays stay deterministic), the wall
        clock live."""
        return self._event_clock(product_id) or self.clock()

    def order_time(self, session: Session, order: OrderRow) -> datetime:
        """Event time of an order's events that bring no fills (in the caller's transaction)."""
        if self.stamp_at_intent:
            market_time = self.terms_of(session, order.client_order_id).market_time
            if market_time is not None:
                return market_time
        return self.event_now(order.product_id)

    def terms_of(self, session: Session, cid: str) -> Terms:
        """The order's :class:`Terms`, read in ``session`` the first time they are asked."""
        terms = self._terms.get(cid)
        if terms is None:
            pricing = pricing_of(session, cid)
            terms = Terms(
                reference_price=pricing.reference_price if pricing else None,
                market_time=pricing.market_time if pricing else None,
                stop_price=stop_price_of(session, cid),
                intent_reason=intent_reason_of(session, cid),
            )
            self._terms[cid] = terms
        return terms

    def _lock(self, cid: str) -> asyncio.Lock:
        return self._locks.setdefault(cid, asyncio.Lock())

    def schedule(self, cid: str, delay_s: float = 0.0) -> None:
        due = self._due.get(cid)
        at = self._monotonic() + delay_s
        if due is None:
            self._due[cid] = Due(at)
        else:
            due.at = min(due.at, at)
        self._wake.set()

    def poll_all_now(self) -> None:
        """Poll every open order at once (the mock market just filled something)."""
        now = self._monotonic()
        for entry in self._due.values():
            entry.at = min(entry.at, now)
            entry.interval_s = None
        self._wake.set()

    def exchange_cid(self, cid: str) -> str:
        return f"{self.settings.client_order_prefix}{cid}"

    async def _call(self, cid: str, name: str, fn: Callable[..., T], *args: object) -> T:
        """An exchange call made for one order: within the order's request budget (then
        through the gateway's shared rate limiter)."""
        budget = self._budgets.setdefault(
            cid, RequestBudget(self.settings.order_requests_per_minute)
        )
        now = self._monotonic()
        wait = budget.wait_s(now)
        if wait > 0:
            raise ExchangeError(
                f"{cid} used its {budget.limit} exchange requests of the last minute "
                f"(TRANCHE_ORDER_REQUESTS_PER_MINUTE); asking again in {wait:.0f} s",
                code="ORDER_REQUEST_BUDGET",
                retry_after_s=wait,
            )
        budget.spend(now)
        return await self.gateway.call(name, fn, *args)

    def _forget(self, cid: str) -> None:
        self._due.pop(cid, None)
        self._budgets.pop(cid, None)
        self._terms.pop(cid, None)
        if cid in self._lost:
            self._lost.discard(cid)
            LOST_ORDERS.set(len(self._lost))

    def _request(self, order: OrderRow, terms: Terms) -> OrderRequest:
        return OrderRequest(
            client_order_id=order.exchange_client_order_id,
            product_id=order.product_id,
            side=order.side,
            order_type=exchange_order_type(order.order_type),
            stop_price=terms.stop_price,
            quote_size=order.quote_size,
            base_size=order.base_size,
            limit_price=order.limit_price,
            reference_price=terms.reference_price,
            market_time=terms.market_time,
        )

    async def _note_error(self, cid: str, error: ExchangeError) -> None:
        def note(session: Session) -> None:
            row = order_of(session, cid)
            if row is not None and not is_final(row.status):
                row.last_error = f"{error.code}: {error.message}"[:500]
                session.add(row)

        await self.service.transact(note)

    # -- approvals ----------------------------------------------------------------------------

    async def on_approval(self, approval: OrderApproved) -> None:
        """Record the order (or refuse it with a reason), then place it. Idempotent."""
        intent = approval.intent
        cid = approval.client_order_id
        now = self.clock()
        listed, unavailable = await self._exchange_rules(intent.product_id)

        def record(session: Session) -> tuple[bool, bool]:
            """(whether to go on with the order, whether it was recorded just now)"""
            status = status_of(session, cid)
            if status is not None:  # a redelivery: resume it (asking the exchange first)
                return not is_final(status), False
            reason = refusal_reason(approval, self.settings.mode, now, self.settings.approval_ttl)
            spec = None
            if reason is None and self.listing is not None:
                reason = unavailable or tradable_refusal(
                    intent.product_id, listed, intent.order_type
                )
            if reason is None:
                product = (
                    listed.as_product()
                    if listed is not None
                    else self.catalog.products.get(intent.product_id)
                )
                if product is None:
                    reason = Reason(
                        code="UNKNOWN_PRODUCT", message=f"{intent.product_id} is not in the catalog"
                    )
                else:
                    sized = size_order(  # a stop-limit is sized as the limit it becomes
                        order_type="limit" if intent.stop_price else intent.order_type,
                        side=intent.side,
                        quote_size=intent.quote_size,
                        base_size=intent.base_size,
                        limit_price=intent.limit_price,
                        reference_price=intent.reference_price,
                        product=product,
                    )
                    reason, spec = (sized, None) if isinstance(sized, Reason) else (None, sized)
                    if spec is not None and listed is not None:
                        reason = above_maximum(listed, spec.base_size, spec.quote_size)
            order = {
                "client_order_id": cid,
                "exchange_client_order_id": self.exchange_cid(cid),
                "intent_id": intent.intent_id,
                "bot_id": intent.bot_id,
                "product_id": intent.product_id,
                "mode": approval.mode,
                "action": intent.action,
                "side": intent.side,
                "order_type": store_order_type(intent.order_type),
                "quote_size": spec.quote_size if spec else intent.quote_size,
                "base_size": spec.base_size if spec else intent.base_size,
                "limit_price": spec.limit_price if spec else intent.limit_price,
                "ttl_s": intent.order_ttl_s or self.settings.limit_order_ttl_s,
                "decided_at": approval.decided_at,
                "status": NEW,
            }
            insert_row(session, OrderIntentReasonRow, client_order_id=cid, code=intent.reason.code)
            if reason is not None:
                record_event(session, OrderRow(**order), refusal_event(approval, reason))
                return False, False
            insert_row(session, OrderRow, **order)
            if intent.stop_price is not None:
                insert_row(session, OrderStopRow, client_order_id=cid, stop_price=intent.stop_price)
            if intent.reference_price is not None or intent.market_time is not None:
                insert_row(
                    session,
                    OrderPricingRow,
                    client_order_id=cid,
                    reference_price=intent.reference_price,
                    market_time=intent.market_time,
                )
            self.claims.stake(session, cid)
            return True, True

        with correlated(intent.intent_id, bot_id=intent.bot_id, client_order_id=cid):
            go_on, fresh = await self.service.transact(record)
            if not go_on:
                log.info("approval.done_or_refused")
                return
            if fresh:  # what was just stored, known without reading it back
                self._terms[cid] = Terms(
                    intent.reference_price,
                    intent.market_time,
                    intent.stop_price,
                    intent.reason.code,
                )
            await self.sync(cid, fresh=fresh)

    async def _exchange_rules(self, product_id: str) -> tuple[ProductRules | None, Reason | None]:
        """(the exchange's rules of the product, why there are none) in production; nothing
        in mock mode. Fails closed: no rules at all means no order."""
        if self.listing is None:
            return None, None
        try:
            return await self.listing.rules_for(product_id), None
        except ExchangeError as error:
            return None, Reason(
                code="PRODUCT_RULES_UNAVAILABLE",
                message=(
                    f"the exchange's rules for {product_id} could not be fetched and none are "
                    f"stored ({error.code}): no order sized by guesswork"
                ),
            )

    # -- one order ----------------------------------------------------------------------------

    async def sync(self, cid: str, fresh: bool = False) -> bool:
        """Bring one order up to date with the exchange; returns whether anything changed.
        Exchange failures leave it as it was (to be asked again after a back-off), never failed.
        ``fresh``: the order was recorded just now, so it cannot be on the exchange yet."""
        async with self._lock(cid):
            order = await asyncio.to_thread(self._open, cid)
            if order is None:  # another live instance looks after it, or it is final
                self._forget(cid)
                return False
            due = self._due.setdefault(cid, Due(0))
            if order.status == UNKNOWN_AT_EXCHANGE:
                self._lost.add(cid)
                LOST_ORDERS.set(len(self._lost))
            retry_after = None
            current: OrderRow | None = None
            with correlated(order.intent_id, bot_id=order.bot_id, client_order_id=cid):
                # The cancel first, on its own schedule: it goes out whatever the polls return.
                await self._cancel_if_due(order, due)
                try:
                    changed, current = await self._sync(order, fresh)
                except ExchangeError as error:
                    POLLS.labels(error.code).inc()
                    log.warning("order.sync_failed", code=error.code, error=error.message)
                    await self._note_error(cid, error)
                    changed = False
                    retry_after = error.retry_after_s
                    if isinstance(error, OrderNotFound) and order.exchange_order_id is not None:
                        changed = await self._maybe_lost(order, due)
                else:
                    POLLS.labels("ok").inc()
                    due.lost_since = None
            if current is None:
                current = await self.service.read(lambda session: order_of(session, cid))
            if current is None or is_final(current.status):
                self._forget(cid)
            else:
                settings = self.settings
                due.after_poll(
                    self._monotonic(),
                    changed,
                    settings.poll_interval_s,
                    poll_cap_s(
                        current,
                        settings.poll_max_interval_s,
                        settings.resting_stop_poll_max_interval_s,
                    ),
                    retry_after_s=retry_after,
                    ttl_in_s=self._ttl_deadline(current),
                )
            return changed

    def _open(self, cid: str) -> OrderRow | None:
        """The order to sync, read in the transaction that checks (or takes) its claim;
        ``None``: another live instance holds the claim, or the order is unknown or final."""
        with Session(self.service.engine, expire_on_commit=False) as session:
            if not self.claims.hold_in(session, cid):
                return None
            order = order_of(session, cid)
            return None if order is None or is_final(order.status) else order

    async def _maybe_lost(self, order: OrderRow, due: Due) -> bool:
        """The exchange answers 404 for an order it accepted. Within the grace period that is
        only a failed poll (backed off like any other); past it, the order is looked for by
        ``client_order_id`` and, not found, marked ``unknown_at_exchange``: not final (its bot
        stays blocked, its fills may still turn up), alerted on, settled by an operator
        (``tranche orders resolve``)."""
        now = self._monotonic()
        if due.lost_since is None:
            due.lost_since = now
        grace = self.settings.lost_order_grace_s
        if now - due.lost_since < grace:
            return False
        cid = order.client_order_id
        booked = await self._book_fills_of_lost(order)
        if order.status == UNKNOWN_AT_EXCHANGE and not booked:
            return False
        try:
            found = await self._call(
                cid,
                "find_order",
                self.exchange.find,
                order.exchange_client_order_id,
                order.product_id,
                order.created_at - LOOKBACK,
            )
        except ExchangeError as error:
            log.warning("order.lost_search_failed", code=error.code, error=error.message)
            return False
        if found is not None and found.exchange_order_id != order.exchange_order_id:
            log.warning("order.found_under_another_id", exchange_order_id=found.exchange_order_id)
            changed, _ = await self._record(order, found)
            return changed
        fills = f" (its {booked} fill(s) in the list of fills are booked)" if booked else ""
        message = (
            f"the exchange answers 404 for order {order.exchange_order_id} it accepted, for "
            f"{now - due.lost_since:.0f} s, and lists no order with client_order_id "
            f"{order.exchange_client_order_id}{fills}: settle it with "
            f"`tranche orders resolve {cid}`"
        )

        def mark(session: Session) -> bool:
            row = order_of(session, cid)
            if row is None:
                return False
            moved = transition(row.status, NOT_FOUND)
            if isinstance(moved, Refusal):
                return False
            # Said on the bus too: the dashboard and the live view show it with why.
            event = OrderEvent(
                message_id=f"order-{cid}-{UNKNOWN_AT_EXCHANGE}-{row.filled_size}",
                correlation_id=row.intent_id,
                time=self.order_time(session, row),
                status=UNKNOWN_AT_EXCHANGE,
                reason=Reason(code=UNKNOWN_AT_EXCHANGE.upper(), message=message[:500]),
                filled_size=row.filled_size,
                **identity_fields(row),
            )
            record_event(session, row, event)
            row.last_error = f"{UNKNOWN_AT_EXCHANGE.upper()}: {message}"[:500]
            session.add(row)
            return True

        marked = await self.service.transact(mark)
        if marked:
            self._lost.add(cid)
            LOST_ORDERS.set(len(self._lost))
            log.error("order.unknown_at_exchange", reason=message)
        return marked

    async def _book_fills_of_lost(self, order: OrderRow) -> int:
        """Look for a lost order's fills in the exchange's list of fills (by its order id, which
        list-fills filters on whatever get_order answers) and book those not known yet; returns
        how many were new. The order is reported ``OPEN`` with them (it traded, so the exchange
        accepted it); the caller marks it ``unknown_at_exchange`` again right after."""
        cid = order.client_order_id
        try:
            raw = await self._call(cid, "get_fills", self.exchange.fills, order.exchange_order_id)
        except ExchangeError as error:
            log.warning("order.lost_fills_search_failed", code=error.code, error=error.message)
            return 0
        known = await self._known_fills(order)
        if len(raw) <= known:
            return 0
        seen = ExchangeOrder(
            exchange_order_id=order.exchange_order_id or "",
            client_order_id=order.exchange_client_order_id,
            product_id=order.product_id,
            side=order.side,
            status="OPEN",
            number_of_fills=len(raw),
        )
        await self._record(order, seen, raw)
        log.warning("order.lost_fills_booked", found=len(raw), new=len(raw) - known)
        return len(raw) - known

    async def _sync(self, order: OrderRow, fresh: bool) -> tuple[bool, OrderRow | None]:
        """(whether anything changed, the order as this sync left it stored; ``None``: not
        known here, to be read)."""
        cid = order.client_order_id
        answer: ExchangeOrder | None
        if order.exchange_order_id is None:
            answer = await self._place_or_find(order, fresh)
            if answer is None:
                return True, None  # settled without the exchange (never placed)
        else:
            answer = await self._call(cid, "get_order", self.exchange.get, order.exchange_order_id)
        changed, stored = await self._record(order, answer)
        if stored is None or is_final(stored.status):
            return changed, stored
        if stored.cancel_code is None and self._ttl_passed(stored):
            await self.request_cancel(
                cid, "LIMIT_TTL", f"not filled within its time-to-live of {stored.ttl_s} s"
            )
            return True, None
        return changed, stored

    async def _cancel_if_due(self, order: OrderRow, due: Due) -> None:
        """Mark a resting limit order past its time-to-live for cancelling, and ask the
        exchange to cancel whenever the order's cancel schedule says so (a failed cancel backs
        off; the polls tell whether it took effect)."""
        now = self._monotonic()
        if order.cancel_code is None and order.exchange_order_id and self._ttl_passed(order):
            message = f"not filled within its time-to-live of {order.ttl_s} s"
            marked = await self._mark_cancel(order.client_order_id, "LIMIT_TTL", message)
            if marked is None:
                return
            order = marked
            due.cancel_at = now
            log.info("order.cancel_requested", code="LIMIT_TTL")
        if order.cancel_code is None or order.exchange_order_id is None:
            return
        if due.cancel_at is None:  # asked before a restart: ask again now
            due.cancel_at = now
        if due.cancel_due(now):
            await self._send_cancel(order, due)

    async def _send_cancel(self, order: OrderRow, due: Due) -> None:
        try:
            await self._call(
                order.client_order_id,
                "cancel_orders",
                self.exchange.cancel,
                order.exchange_order_id,
            )
        except ExchangeError as error:
            CANCELS.labels(error.code).inc()
            log.warning("order.cancel_failed", code=error.code, error=error.message)
        else:
            CANCELS.labels("ok").inc()
        finally:
            settings = self.settings
            due.after_cancel(
                self._monotonic(), settings.poll_interval_s, settings.poll_max_interval_s
            )

    def _ttl_deadline(self, order: OrderRow) -> float | None:
        """Seconds until a resting limit order's time-to-live runs out (None: no such limit)."""
        if order.order_type != "limit" or order.placed_at is None or order.ttl_s is None:
            return None
        if order.cancel_code is not None:
            return None
        ends = order.placed_at + timedelta(seconds=order.ttl_s)
        return (ends - self.clock()).total_seconds()

    def _ttl_passed(self, order: OrderRow) -> bool:
        return (
            order.order_type == "limit"
            and order.placed_at is not None
            and order.ttl_s is not None
            and limit_order_expired(order.placed_at, timedelta(seconds=order.ttl_s), self.clock())
        )

    async def _place_or_find(self, order: OrderRow, fresh: bool) -> ExchangeOrder | None:
        """Place a ``new`` order; unless it was recorded just now (an earlier attempt, before a
        timeout or a restart, may have reached the exchange) ask for it by ``client_order_id``
        first. ``None``: settled here without an exchange order."""
        found = None
        if not fresh or order.cancel_code is not None:
            found = await self._call(
                order.client_order_id,
                "find_order",
                self.exchange.find,
                order.exchange_client_order_id,
                order.product_id,
                order.created_at - LOOKBACK,
            )
        if found is not None:
            log.info("order.found_by_client_order_id", exchange_order_id=found.exchange_order_id)
            return found
        if order.cancel_code is not None:
            await self._settle_unplaced(order, "cancelled", order.cancel_code, order.cancel_message)
            return None
        ttl = self.settings.approval_ttl
        if not fresh and ttl and self.clock() - order.decided_at > ttl:
            await self._settle_unplaced(
                order,
                "failed",
                "NOT_PLACED",
                f"the exchange does not have the order ({order.last_error or 'interrupted'}) and "
                "its approval is past its time-to-live: not placed",
            )
            return None
        # The last step before the exchange: never while halted, no entry while reducing,
        # whatever the approval said (safety's signed events, services/executor/trading.py).
        # Never two live stops, never a stop beside another sell (services/executor/protective.py).
        # Both read in one transaction, with what the order was asked with.
        states, gate, terms = await self.service.read(
            lambda session: (
                states_for(session, order.bot_id),
                sell_gate(session, order),
                self.terms_of(session, order.client_order_id),
            )
        )
        blocked = placement_block(states, order.bot_id, order.action)
        if blocked is not None:
            await self._settle_unplaced(order, "failed", blocked.code, blocked.message)
            return None
        if gate.refusal is not None:
            await self._settle_unplaced(order, "failed", gate.refusal.code, gate.refusal.message)
            return None
        for stop in gate.cancel_first:
            await self.request_cancel(
                stop, CANCEL_FOR_SELL, f"cancelled before the sell {order.client_order_id}"
            )
        if gate.wait:
            log.info("order.waits_for_stop_cancel")
            return None
        try:
            answer = await self._call(
                order.client_order_id,
                "create_order",
                self.exchange.place,
                self._request(order, terms),
            )
        except OrderRefused as error:
            await self._settle_unplaced(order, "failed", error.code, error.message)
            return None
        if self.settings.executor_fault == "crash_after_send":
            log.warning("fault.crash_after_send", exchange_order_id=answer.exchange_order_id)
            os._exit(87)
        log.info("order.placed", exchange_order_id=answer.exchange_order_id, status=answer.status)
        return answer

    async def _settle_unplaced(
        self, order: OrderRow, status: str, code: str, message: str | None
    ) -> None:
        reason = Reason(code=_code(code), message=(message or code)[:500])
        report = ExchangeReport(
            exchange_order_id="", status=status.upper(), reason=reason, number_of_fills=0
        )

        def store(session: Session) -> None:
            row = order_of(session, order.client_order_id)
            if row is None or is_final(row.status):
                return
            # Never reached the exchange: no "submitted" before the final event.
            state = state_of(session, row)
            step = advance(identity(row), state, report, self.order_time(session, row))
            events = [event for event in step.events if event.status != "submitted"]
            apply(session, row, type(step)(step.status, step.fills, events), None, state)

        await self.service.transact(store)
        ORDER_EVENTS.labels(status).inc()
        log.info("order.settled_unplaced", status=status, code=code)

    def _fee_undecided(
        self, order: OrderRow, answer: ExchangeOrder, fetched: list[ExchangeFill]
    ) -> bool:
        """Whether to wait before recording: a quote-sized fill says whether its amount holds
        the fee only beside all of the order's fills (:func:`quote_includes_fee` compares their
        sum with the order's total), and Coinbase lists a fill a moment after the order says
        it filled. Judged on some of them, a fee could be booked as base, for good. Waited for
        up to ``WAIT_FOR_FILLS_POLLS`` polls, as a final order's missing fills are."""
        counted = answer.number_of_fills or 0
        if not answer.size_inclusive_of_fees or len(fetched) >= counted:
            return False
        if not any(fill.size_in_quote for fill in fetched):
            return False
        due = self._due.setdefault(order.client_order_id, Due(0))
        if due.waited_for_fills >= WAIT_FOR_FILLS_POLLS:
            return False
        due.waited_for_fills += 1
        log.info("order.waiting_for_fills", known=len(fetched), counted=counted, quote_sized=True)
        return True

    async def _known_fills(self, order: OrderRow) -> int:
        return await self.service.read(lambda session: len(state_of(session, order).known_fills))

    async def _record(
        self, order: OrderRow, answer: ExchangeOrder, raw_fills: list[ExchangeFill] | None = None
    ) -> tuple[bool, OrderRow | None]:
        """Record what the exchange says of the order; ``raw_fills``: its fills, already asked
        for (else asked here when the exchange counts more than are known). Returns whether
        anything changed, and the order as stored after it (``None``: there is no such order)."""
        if raw_fills is None and answer.fills is not None:
            raw_fills = list(answer.fills)  # answered with the order: nothing more to ask
        fetched: list[ExchangeFill] = list(raw_fills or [])
        # The fills stored are counted only when nothing else says whether to ask for more.
        if raw_fills is None and (
            answer.number_of_fills is None
            or answer.filled_size > order.filled_size
            or (
                answer.number_of_fills > 0
                and answer.number_of_fills > await self._known_fills(order)
            )
        ):
            fetched = await self._call(
                order.client_order_id, "get_fills", self.exchange.fills,
                answer.exchange_order_id,
            )  # fmt: skip
        unknown = unrecognised_fills(fetched)
        if unknown:
            STATUS_ALERTS.labels("UNRECOGNISED_FILL").inc()
            log.error(
                "order.fill_alert",
                code="UNRECOGNISED_FILL",
                exchange_status=answer.status,
                fills=[f"{fill.trade_id}:{fill.trade_type}"[:80] for fill in unknown[:5]],
                reason="a fill record of a type the executor does not know: the report is not "
                "booked, the order stays in flight and is asked again",
            )
            return False, order
        if self._fee_undecided(order, answer, fetched):
            return False, order
        reason = None
        if answer.status == "FAILED":
            code, _, message = (answer.reject_reason or "EXCHANGE_FAILED").partition(": ")
            reason = Reason(code=_code(code), message=(message or code)[:500])
        inclusive = quote_includes_fee(
            fetched, answer.size_inclusive_of_fees, answer.total_value_after_fees
        )
        fills = tuple(convert_fill(fill, inclusive) for fill in fetched)
        report = ExchangeReport(
            exchange_order_id=answer.exchange_order_id,
            status=answer.status,
            fills=fills,
            number_of_fills=answer.number_of_fills,
            reason=reason,
        )
        adopted_reason = (
            Reason(
                code="ADOPTED",
                message="found open on the exchange with our client_order_id prefix but not in "
                "the executor's store; tracked from now on",
            )
            if order.adopted
            else None
        )

        def store(session: Session) -> tuple[Advance | None, OrderRow | None]:
            row = order_of(session, order.client_order_id)
            if row is None or is_final(row.status):
                return None, row
            said = report
            if answer.status in ("CANCELLED", "EXPIRED") and row.cancel_code:
                # Read in this transaction: a halt may have asked for the cancel a moment ago.
                why = Reason(code=row.cancel_code, message=row.cancel_message or row.cancel_code)
                said = replace(report, reason=why)
            due = self._due.get(row.client_order_id)
            state = state_of(session, row)
            step = advance(
                identity(row),
                state,
                said,
                self.order_time(session, row),
                stop_waiting=due is not None and due.waited_for_fills >= WAIT_FOR_FILLS_POLLS,
            )
            if adopted_reason is not None:
                step.events[:] = [
                    e.model_copy(update={"reason": adopted_reason})
                    if e.status == "submitted"
                    else e
                    for e in step.events
                ]
            reasons = {
                row.client_order_id: self.terms_of(session, row.client_order_id).intent_reason
            }
            apply(session, row, step, answer.exchange_order_id, state, reasons)
            return step, row

        step, stored = await self.service.transact(store)
        if step is None:
            return False, stored
        if step.alert is not None:
            STATUS_ALERTS.labels(step.alert.code).inc()
            log.error(
                "order.status_alert",
                code=step.alert.code,
                exchange_status=answer.status,
                reason=step.alert.message,
            )
        for event in step.events:
            ORDER_EVENTS.labels(event.status).inc()
            log.info(
                "order.changed",
                status=event.status,
                fills=len(event.fills),
                filled_size=str(event.filled_size),
                reason=event.reason.code if event.reason else None,
            )
        if step.waiting_for_fills:
            log.info("order.waiting_for_fills", exchange_status=answer.status)
            self._due.setdefault(order.client_order_id, Due(0)).waited_for_fills += 1
        elif (
            step.events
            and is_final(step.status)
            and len(step.fills) < (answer.number_of_fills or 0)
        ):
            log.warning(
                "order.final_with_fills_missing",
                known=len(step.fills),
                counted=answer.number_of_fills,
            )
        return step.changed, stored

    # -- an operator settles an order the exchange lost ---------------------------------------

    async def resolve(
        self, cid: str, settled_as: str, why: str, operator: str, fill: Fill | None = None
    ) -> Reason | None:
        """Settle an ``unknown_at_exchange`` order by hand, as ``cancelled`` or ``filled``
        (with the fill the operator found on the exchange, or none when its fills are booked
        already), audited: the final event carries
        who and why, the record keeps it, the log says it. Returns why not, or ``None``."""
        event = RESOLVED_CANCELLED if settled_as == "cancelled" else RESOLVED_FILLED
        reason = Reason(
            code="OPERATOR_RESOLVED",
            message=f"resolved by {operator} as {settled_as}: {why}"[:500],
        )

        def settle(session: Session) -> Reason | Advance:
            row = order_of(session, cid)
            if row is None:
                return Reason(code="UNKNOWN_ORDER", message=f"no order {cid}")
            moved = transition(row.status, event)
            if isinstance(moved, Refusal):
                return Reason(
                    code=moved.code, message=f"{cid} is {row.status}: {moved.message}"[:500]
                )
            state = state_of(session, row)
            if event == RESOLVED_FILLED and fill is None and not state.known_fills:
                return Reason(
                    code="NO_FILL",
                    message=f"{cid} has no fill booked: settling it as filled needs the size "
                    "and price the exchange filled (--size, --price)",
                )
            fills = state.known_fills + ((fill,) if fill is not None else ())
            report = ExchangeReport(
                exchange_order_id=row.exchange_order_id or "",
                status=settled_as.upper(),
                fills=fills,
                reason=reason,
            )
            step = advance(identity(row), state, report, self.clock())
            apply(session, row, step, row.exchange_order_id, state)
            return step

        async with self._lock(cid):
            outcome = await self.service.transact(settle)
        if isinstance(outcome, Reason):
            log.warning("order.resolve_refused", client_order_id=cid, code=outcome.code)
            return outcome
        self._forget(cid)
        ORDER_EVENTS.labels(outcome.status).inc()
        log.warning(
            "order.resolved_by_operator",
            client_order_id=cid,
            settled_as=settled_as,
            operator=operator,
            reason=why,
        )
        return None

    # -- cancels --------------------------------------------------------------------------------

    async def _mark_cancel(self, cid: str, code: str, message: str) -> OrderRow | None:
        """Record why the order is to be cancelled (the first reason stays)."""

        def mark(session: Session) -> OrderRow | None:
            row = order_of(session, cid)
            if row is None or is_final(row.status):
                return None
            if row.cancel_code is None:
                row.cancel_code, row.cancel_message = code, message[:500]
            if row.exchange_order_id is not None:
                moved = transition(row.status, CANCEL_ASKED)
                if isinstance(moved, str):
                    row.status = moved
            session.add(row)
            return row

        return await self.service.transact(mark)

    async def request_cancel(self, cid: str, code: str, message: str) -> None:
        """Record why, then ask the exchange; the next polls report the cancellation (or the fill
        that beat it). An order not yet on the exchange is settled without placing it."""
        order = await self._mark_cancel(cid, code, message)
        if order is None:
            return
        log.info("order.cancel_requested", client_order_id=cid, code=code)
        due = self._due.setdefault(cid, Due(self._monotonic()))
        if order.exchange_order_id is not None:
            await self._send_cancel(order, due)
        self.schedule(cid)

    async def on_safety_event(self, event: SafetyEvent) -> list[str]:
        """Keep the trading state it sets; a halt cancels the open orders it covers
        (``reducing``: the entries); returns them. Only for events safety signed (app.py).
        An event that sets no state (a limit reached, a breach told) changes nothing here and
        reads nothing: the backtest hears one for most rejections."""
        if event.state is None:
            return []
        if await self.service.transact(lambda session: record_state(session, event)):
            log.info("trading_state.changed", scope=event.bot_id or "*", state=event.state)

        def covered(session: Session) -> list[str]:
            orders = [
                OpenOrder(row.client_order_id, row.bot_id, row.action, row.status)
                for row in open_orders(session)
                if halt_cancels(event.code, row.order_type)  # a halt keeps protective stops
            ]
            return cancels_for(event, orders)

        targets = await self.service.read(covered)
        message = f"{event.code} ({event.state}): {event.message}"[:500]
        for cid in targets:
            await self.request_cancel(
                cid, "HALT" if event.state == "halted" else "REDUCING", message
            )
        if targets:
            log.warning("safety.cancelling", code=event.code, orders=len(targets))
        return targets

    # -- the poll loop ------------------------------------------------------------------------

    async def keep_claims(self) -> None:
        """Renew this instance's heartbeat and take over orders whose instance stopped, forever."""
        while True:
            try:
                await asyncio.to_thread(self.claims.heartbeat)
                for cid in await asyncio.to_thread(self.claims.orphans):
                    if cid not in self._due:
                        log.info("order.taking_over", client_order_id=cid)
                        self.schedule(cid)
            except Exception as error:  # storage trouble: try again at the next beat
                log.error("claims.heartbeat_failed", error=repr(error))
            await asyncio.sleep(HEARTBEAT_S)

    async def run(self, concurrency: int = 8) -> None:
        """Poll every due order, forever (a background job); keeps this instance's claims."""
        claims = asyncio.create_task(self.keep_claims())
        try:
            await self._poll(concurrency)
        finally:
            claims.cancel()
            try:
                self.claims.release()  # the other instances take over at once
            except Exception as error:
                log.warning("claims.release_failed", error=repr(error))

    async def _poll(self, concurrency: int) -> None:
        gate = asyncio.Semaphore(concurrency)
        last_adoption = self._monotonic()

        async def one(cid: str) -> None:
            async with gate:
                try:
                    await self.sync(cid)
                except Exception as error:  # storage trouble: keep polling the others
                    log.error("order.sync_crashed", client_order_id=cid, error=repr(error))
                    entry = self._due.setdefault(cid, Due(0))
                    entry.at = self._monotonic() + self.settings.poll_max_interval_s

        while True:
            now = self._monotonic()
            due = [cid for cid, entry in self._due.items() if entry.at <= now]
            for cid in due:
                self._due[cid].at = float("inf")  # not picked twice while it runs
            if due:
                await asyncio.gather(*(one(cid) for cid in due), return_exceptions=False)
            OPEN_ORDERS.set(len(self._due))
            if self.adoption_pending and now - last_adoption > self.settings.poll_max_interval_s:
                last_adoption = now
                await adopt(self)
            next_at = min((entry.at for entry in self._due.values()), default=now + 1.0)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), timeout=max(0.01, min(1.0, next_at - now))
                )


def _code(text: str) -> str:
    """A stable code from what the exchange said (``Reason.code``'s pattern)."""
    code = re.sub(r"[^A-Z0-9_]", "_", text.strip().upper())[:64]
    if not code or not code[0].isalpha():
        code = f"X_{code}"[:64]
    return code if len(code) >= 2 else "EXCHANGE_FAILED"
