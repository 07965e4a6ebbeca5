"""Orders (pure): the order state machine, Coinbase's statuses mapped to ours, fills converted to
base currency, order sizing by the product's rules, and which approvals and halts mean what.

No broker, database or clock in here: callers pass ``now`` and what they stored and what the
exchange answered, and get back the new status and the events to publish.

The state machine is a table (:mod:`services.executor.states`): every (state, event) pair is a
transition or a named refusal. :func:`advance` applies a report from the exchange to it and says
which events that means::

    new ─► submitted ─► open ─► partially_filled ─► filled | cancelled | expired
     │         │          │            ▲  (each new fill: one more partially_filled event)
     └─────────┴──────────┴──► failed  └── cancelled / expired keep the fills before them
    (local, never published: pending_cancel once a cancel is asked or queued;
     unknown_at_exchange for an order the exchange has lost)

A status never moves backwards, a final status never changes, and an order is made final only
once every fill the exchange counts is known, so the final event carries all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_UP, Decimal
from typing import cast, get_args

from services.executor.states import (
    NEW,
    OPEN,
    PARTIALLY_FILLED,
    SUBMITTED,
    UNKNOWN_AT_EXCHANGE,
    Refusal,
    transition,
)
from shared.catalog import Product
from shared.contracts import (
    FINAL_ORDER_STATUSES,
    Fill,
    Mode,
    OrderApproved,
    OrderEvent,
    Reason,
    SafetyEvent,
    Side,
    TradeType,
)

PARTIALLY_FILLED_OR_EARLIER = (NEW, SUBMITTED, OPEN, UNKNOWN_AT_EXCHANGE)
"""States an order with fills is reported as ``partially_filled`` from (unless it is final or
a cancel is pending)."""
BASE_PRECISION = Decimal("1E-18")  # what a NUMERIC(38, 18) column keeps


def is_final(status: str) -> bool:
    return status in FINAL_ORDER_STATUSES


# -- fills ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExchangeFill:
    """A fill as Coinbase reports it (``get_fills``): ``size`` is in *quote* currency when
    ``size_in_quote`` is true (a market buy sized in quote), else in base."""

    trade_id: str
    price: Decimal
    size: Decimal
    size_in_quote: bool
    commission: Decimal
    liquidity_indicator: str
    trade_time: datetime
    entry_id: str | None = None
    """Coinbase's unique id of this fill record (``trade_id`` repeats for adjustments)."""
    trade_type: str = "FILL"
    """As the exchange sent it: ``FILL``, ``REVERSAL`` (undoes an earlier fill), ``CORRECTION``
    or ``SYNTHETIC`` (:data:`TRADE_TYPES`); the executor books no report with any other
    (:func:`unrecognised_fills`)."""


TRADE_TYPES: tuple[str, ...] = get_args(TradeType)
"""The fill records Coinbase documents, and the ledger books."""


def unrecognised_fills(fills: list[ExchangeFill]) -> list[ExchangeFill]:
    """The fills of a type the executor does not know. Booking one as a plain fill could count
    what undoes a trade as a trade (a reversal that moved the position the wrong way): the
    order's report is refused instead, with an alert, and asked again (fail closed: the order
    stays in flight, so safety approves no new entry of the bot while an operator looks)."""
    return [fill for fill in fills if fill.trade_type.upper() not in TRADE_TYPES]


def convert_fill(fill: ExchangeFill, size_includes_fee: bool = False) -> Fill:
    """Our :class:`Fill`: size always in base currency, fee in quote (as reported: at the
    quote currency's precision, never rounded to cents).

    A ``size_in_quote`` fill of 100 USD at 50,000 USD is 0.002 BTC, not 100 BTC: reading the
    quote amount as base once made another bot's P&L thousands of times too large.
    ``size_includes_fee``: the quote amount includes the fee (see :func:`quote_includes_fee`),
    so only the rest bought base."""
    quote = fill.size - fill.commission if size_includes_fee else fill.size
    size = quote / fill.price if fill.size_in_quote else fill.size
    return Fill(
        trade_id=fill.trade_id,
        price=fill.price,
        size=size.quantize(BASE_PRECISION, rounding=ROUND_HALF_EVEN).normalize(),
        fee=fill.commission,
        liquidity="maker" if fill.liquidity_indicator.upper() == "MAKER" else "taker",
        time=fill.trade_time,
        entry_id=fill.entry_id,
        # One of TRADE_TYPES: callers refuse the others first (unrecognised_fills); Fill
        # validates it all the same.
        trade_type=cast(TradeType, fill.trade_type.upper()),
    )


def quote_includes_fee(
    fills: list[ExchangeFill], size_inclusive_of_fees: bool, total_value_after_fees: Decimal
) -> bool:
    """Whether a quote-sized order's fills report their quote amount with the fee inside.

    Coinbase sizes a quote-sized buy with the fee included (``size_inclusive_of_fees``) and
    says what it cost in all (``total_value_after_fees``): fills whose quote amounts add up to
    that total include the fee; fills that add up to it only with their commissions do not."""
    quoted = [fill for fill in fills if fill.size_in_quote]
    if not size_inclusive_of_fees or not quoted or total_value_after_fees <= 0:
        return False
    amounts = sum((fill.size for fill in quoted), Decimal(0))
    fees = sum((fill.commission for fill in quoted), Decimal(0))
    return abs(amounts - total_value_after_fees) < abs(amounts + fees - total_value_after_fees)


def fill_key(fill: Fill) -> str:
    """What tells one fill record from another: Coinbase's ``entry_id`` where there is one
    (a reversal repeats the ``trade_id`` it reverses), else the ``trade_id``."""
    return fill.entry_id or fill.trade_id


def signed_size(fill: Fill) -> Decimal:
    """The fill's contribution to the order's filled size: a reversal takes its size back."""
    return -fill.size if fill.trade_type == "REVERSAL" else fill.size


def filled_size_of(fills: tuple[Fill, ...] | list[Fill]) -> Decimal:
    return sum((signed_size(fill) for fill in fills), Decimal(0))


# -- sizing ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderSpec:
    """What goes to the exchange: sizes and prices already on the product's increments."""

    order_type: str
    side: Side
    quote_size: Decimal | None = None
    base_size: Decimal | None = None
    limit_price: Decimal | None = None


def size_order(
    *,
    order_type: str,
    side: Side,
    quote_size: Decimal | None,
    base_size: Decimal | None,
    limit_price: Decimal | None,
    reference_price: Decimal | None,
    product: Product,
) -> OrderSpec | Reason:
    """Round to the product's increments (sizes down, a buy's limit down and a sell's up: never
    pay more or get less than asked) and refuse what falls below the product's minimums.

    A market buy may stay sized in quote (Coinbase fills it for that amount); a limit order is
    always sized in base (``quote_size / limit_price``). ``reference_price`` (the intent's) lets a
    quote-sized market order be checked against the base minimum; without it the exchange checks.
    """
    if order_type == "limit":
        assert limit_price is not None
        rounding = ROUND_DOWN if side == "buy" else ROUND_UP
        price = limit_price.quantize(product.quote_increment, rounding=rounding)
        if price <= 0:
            return Reason(code="BAD_LIMIT_PRICE", message=f"limit price {limit_price} rounds to 0")
        raw = in_base(base_size, quote_size, price)
        size = raw.quantize(product.base_increment, rounding=ROUND_DOWN)
        return _check_minimums(size, price, product) or OrderSpec(
            "limit", side, base_size=size, limit_price=price
        )
    if base_size is not None:
        size = base_size.quantize(product.base_increment, rounding=ROUND_DOWN)
        if size < product.base_min_size:
            return _below_min_size(size, product)
        if reference_price is not None and (
            problem := _check_minimums(size, reference_price, product)
        ):
            return problem
        return OrderSpec("market", side, base_size=size)
    assert quote_size is not None
    quote = quote_size.quantize(product.quote_increment, rounding=ROUND_DOWN)
    if quote < product.quote_min_size:
        return Reason(
            code="BELOW_MIN_NOTIONAL",
            message=f"{quote} is below the minimum order value {product.quote_min_size}",
        )
    if reference_price is not None:
        size = (quote / reference_price).quantize(product.base_increment, rounding=ROUND_DOWN)
        if size < product.base_min_size:
            return _below_min_size(size, product, f" (from {quote} quote at {reference_price})")
    return OrderSpec("market", side, quote_size=quote)


def _below_min_size(size: Decimal, product: Product, detail: str = "") -> Reason:
    return Reason(
        code="BELOW_MIN_SIZE",
        message=f"{size} is below the product's minimum size {product.base_min_size}{detail}",
    )


def _check_minimums(size: Decimal, price: Decimal, product: Product) -> Reason | None:
    if size < product.base_min_size:
        return _below_min_size(size, product)
    if size * price < product.quote_min_size:
        return Reason(
            code="BELOW_MIN_NOTIONAL",
            message=f"{size} at {price} is below the minimum order value {product.quote_min_size}",
        )
    return None


@dataclass(frozen=True)
class MarketFill:
    size: Decimal
    """Base currency, rounded down to the product's increment."""
    fee: Decimal
    """Quote currency, rounded up to the quote increment (never undercount a fee)."""


def in_base(base_size: Decimal | None, quote_size: Decimal | None, price: Decimal) -> Decimal:
    """An order's size in base currency: its base size, else its quote size at ``price``."""
    if base_size is not None:
        return base_size
    assert quote_size is not None, "an order is sized in quote or in base"
    return quote_size / price


def fill_market_order(
    *,
    price: Decimal,
    quote_size: Decimal | None,
    base_size: Decimal | None,
    product: Product,
    fee_rate: Decimal,
) -> MarketFill | Reason:
    """Fill a market order completely at ``price``; either side may be sized in quote or base,
    and both pay the fee in quote currency."""
    raw = in_base(base_size, quote_size, price)
    size = raw.quantize(product.base_increment, rounding=ROUND_DOWN)
    if size < product.base_min_size:
        detail = f" (from {quote_size} quote at {price})" if base_size is None else ""
        return _below_min_size(size, product, detail)
    if problem := _check_minimums(size, price, product):
        return problem
    return MarketFill(size=size, fee=fee_for(size * price, fee_rate, product))


def fee_for(notional: Decimal, fee_rate: Decimal, product: Product) -> Decimal:
    """Quote currency, rounded up to the quote increment (never undercount a fee)."""
    return (notional * fee_rate).quantize(product.quote_increment, rounding=ROUND_UP)


# -- approvals, time-to-live, halts ----------------------------------------------------------------


def refusal_reason(
    approval: OrderApproved, mode: Mode, now: datetime, ttl: timedelta | None
) -> Reason | None:
    """Why a *new* approval must not be placed: made for another mode, or decided longer ago
    than ``ttl`` (wall clock; an order already recorded is resumed whatever its age)."""
    if approval.mode != mode:
        return Reason(
            code="MODE_MISMATCH",
            message=f"approved for {approval.mode}, but this executor trades {mode}",
        )
    if ttl is not None and now - approval.decided_at > ttl:
        age = (now - approval.decided_at).total_seconds()
        return Reason(
            code="APPROVAL_EXPIRED",
            message=(
                f"approved {age:.0f} s ago, longer than the approval time-to-live of "
                f"{ttl.total_seconds():g} s (TRANCHE_APPROVAL_TTL_S): the market has moved on"
            ),
        )
    return None


def limit_order_expired(placed_at: datetime, ttl: timedelta, now: datetime) -> bool:
    """A resting limit order not filled within its time-to-live is cancelled."""
    return now - placed_at >= ttl


@dataclass(frozen=True)
class OpenOrder:
    client_order_id: str
    bot_id: str
    action: str
    status: str


def cancels_for(event: SafetyEvent, orders: list[OpenOrder]) -> list[str]:
    """The open orders a safety event says to cancel: a halt (``state == "halted"``) cancels every
    order of the bot it names (all bots when it names none); ``reducing`` (only exits allowed)
    cancels the entries and adds. Anything else cancels nothing."""
    if event.state not in ("halted", "reducing"):
        return []
    return [
        order.client_order_id
        for order in orders
        if not is_final(order.status)
        and (event.bot_id is None or order.bot_id == event.bot_id)
        and (event.state == "halted" or order.action != "exit")
    ]


# -- the state machine -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderIdentity:
    """What every event of one order repeats."""

    bot_id: str
    product_id: str
    mode: Mode
    intent_id: str
    client_order_id: str
    action: str
    side: str


@dataclass(frozen=True)
class OrderState:
    """What the executor has stored about an order."""

    status: str
    known_fills: tuple[Fill, ...] = ()
    exchange_order_id: str | None = None


@dataclass(frozen=True)
class ExchangeReport:
    """What the exchange says about an order now."""

    exchange_order_id: str
    status: str
    """Coinbase's status string (the mock exchange uses the same)."""
    fills: tuple[Fill, ...] = ()
    """Every fill so far, already converted (:func:`convert_fill`)."""
    number_of_fills: int | None = None
    """How many fills the exchange counts; the order waits for them all before it is final."""
    reason: Reason | None = None


@dataclass(frozen=True)
class Advance:
    status: str
    fills: tuple[Fill, ...]
    """Every fill now known (the stored ones and the new ones)."""
    events: list[OrderEvent] = field(default_factory=list)
    waiting_for_fills: bool = False
    alert: Refusal | None = None
    """The report was refused in a way an operator must see (an unknown status, an exchange
    contradicting a final order)."""

    @property
    def changed(self) -> bool:
        return bool(self.events)

    @property
    def filled_size(self) -> Decimal:
        return filled_size_of(self.fills)


def advance(
    order: OrderIdentity,
    state: OrderState,
    report: ExchangeReport,
    now: datetime,
    stop_waiting: bool = False,
) -> Advance:
    """The status the exchange's report moves the order to and the events that says, each change
    once: ids are derived from the order, the status and the number of fills, so a replayed
    report stages nothing new and a re-publish is dropped as a duplicate.

    A final report with fewer fills than the exchange counts waits for them (the final event
    carries every fill); ``stop_waiting`` makes it final anyway with the fills it has, so an order
    is never left pending for good while the exchange says it is final."""
    outcome = transition(state.status, report.status)
    alert = outcome if isinstance(outcome, Refusal) and outcome.alert else None
    if is_final(state.status):
        return Advance(state.status, state.known_fills, alert=alert)
    known_ids = {fill_key(fill) for fill in state.known_fills}
    new_fills = tuple(fill for fill in report.fills if fill_key(fill) not in known_ids)
    fills = state.known_fills + new_fills
    filled_size = filled_size_of(fills)
    target = state.status if isinstance(outcome, Refusal) else outcome
    waiting = False
    if is_final(target) and report.number_of_fills is not None:
        # Final with fills still missing: report what filled, decide when they are all known.
        waiting = len(fills) < report.number_of_fills and not stop_waiting
        if waiting:
            target = state.status
    if filled_size > 0 and target in PARTIALLY_FILLED_OR_EARLIER:
        target = PARTIALLY_FILLED

    events: list[OrderEvent] = []
    exchange_order_id = report.exchange_order_id or state.exchange_order_id

    def event(status: str, message_id: str, **extra: object) -> OrderEvent:
        return OrderEvent(
            message_id=message_id,
            correlation_id=order.intent_id,
            # Event time: the last fill's when it brings fills, else the caller's clock.
            # `extra` is untyped keyword arguments for OrderEvent; its fills are OrderFills
            time=max((fill.time for fill in extra.get("fills", ())), default=now),  # type: ignore[attr-defined]
            bot_id=order.bot_id,
            product_id=order.product_id,
            mode=order.mode,
            intent_id=order.intent_id,
            client_order_id=order.client_order_id,
            exchange_order_id=exchange_order_id,
            action=order.action,
            side=order.side,
            status=status,
            **extra,
        )

    cid = order.client_order_id
    if state.status == NEW and target != NEW:
        events.append(event("submitted", f"order-{cid}-submitted"))
    if target == OPEN and state.status != OPEN:
        events.append(event("open", f"order-{cid}-open"))
    if is_final(target):
        reason = report.reason
        if target == "failed" and reason is None:
            reason = Reason(code="EXCHANGE_FAILED", message="the exchange failed the order")
        events.append(
            event(
                target,
                f"order-{cid}-{target}",
                fills=list(new_fills),
                filled_size=filled_size,
                reason=reason,
            )
        )
    elif new_fills or (target == PARTIALLY_FILLED and state.status != PARTIALLY_FILLED):
        events.append(
            event(
                "partially_filled",
                f"order-{cid}-partially_filled-{len(fills)}",
                fills=list(new_fills),
                filled_size=filled_size,
            )
        )
    return Advance(target, fills, events, waiting, alert)


def refusal_event(
    approval: OrderApproved, reason: Reason, now: datetime | None = None
) -> OrderEvent:
    """An approval the executor will not place (another mode, too old, below the minimums):
    failed, with why."""
    intent = approval.intent
    return OrderEvent(
        message_id=f"order-{approval.client_order_id}-failed",
        correlation_id=intent.intent_id,
        time=now or approval.time,
        bot_id=intent.bot_id,
        product_id=intent.product_id,
        mode=approval.mode,
        intent_id=intent.intent_id,
        client_order_id=approval.client_order_id,
        action=intent.action,
        side=intent.side,
        status="failed",
        reason=reason,
        intent_reason=intent.reason.code,
    )
