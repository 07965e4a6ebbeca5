"""The mock exchange (the default): follows Coinbase's rules that matter to correctness.

* A repeated ``client_order_id`` returns the existing order, never a second one. Its book is
  stored in the executor's database, so this holds across restarts, as it does on Coinbase.
* Sizes follow the product's increments and minimums; a violation fails the order with a reason.
* Market orders fill at once at the latest market price it was given (stamped with that price's
  event time) moved by the slippage, as taker; a buy sized in quote reports its fills with
  ``size_in_quote`` true, as Coinbase does. With no price it fails the order: there is never a
  default price. ``fill_at = "intent"`` fills at the intent's reference price instead, stamped
  with its market time (:func:`pricing_quote`), so a replay at full speed, whose ticks run ahead
  of its orders, fills every order at the price the signal saw, the same way every time.
* Limit orders are good till cancelled: a marketable one fills at once as taker, the rest rests
  (``OPEN``) and fills as maker at its limit when a later price crosses it, ``partial_fill_ratio``
  of what remains per crossing price (1 = all at once).
* Stop-limit orders (``stop_limit``) rest untriggered until the last price reaches the stop, then
  act as the limit order above (:mod:`services.executor.exchanges.mock_stops`). Since the mock
  lives in the executor's process, :meth:`MockExchange.catch_up` replays the prices it missed
  while the executor was down, each at its own event time, as the exchange would have matched them.
* Latency and failures (reject, 429, 5xx, a timeout after placing) are injected with the
  probabilities of :class:`MockSettings` from one seeded random generator (or queued explicitly
  by a test), so the same seed and the same calls give the same run.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import Literal

from sqlalchemy import Engine, bindparam
from sqlalchemy import select as sa_select
from sqlmodel import Field, Session, SQLModel, col, select

from services.executor.exchanges.base import (
    ExchangeOrder,
    ExchangeUnavailable,
    OrderNotFound,
    OrderRequest,
    OutcomeUnknown,
    RateLimited,
)
from services.executor.exchanges.mock_stops import (
    STOP_LIMIT,
    MockStopRow,
    reaches_stop,
    stop_refusal,
    stops_of,
)
from services.executor.orders import ExchangeFill, convert_fill, fee_for
from shared.catalog import Product
from shared.contracts import Fill, Reason, Side
from shared.db import ExactDecimal, UtcDateTime, create_tables, insert_of

MOCK_NAMESPACE = uuid.UUID("9a4f3e6b-2c1d-4e8f-a7b6-5c4d3e2f1a09")
FAULTS = ("reject", "rate_limit", "server_error", "timeout_after_place")
FillAt = Literal["latest", "intent"]


@dataclass(frozen=True)
class Quote:
    price: Decimal
    time: datetime


@dataclass(frozen=True)
class MockSettings:
    """Defaults and their sources are listed in docs/executor.md."""

    taker_fee_rate: Decimal = Decimal("0.006")
    maker_fee_rate: Decimal = Decimal("0.004")
    slippage_bps: Decimal = Decimal(0)
    """Market (and marketable limit) fills move this many basis points against the order."""
    partial_fill_ratio: Decimal = Decimal(1)
    """Share of a resting limit order's remaining size filled per crossing price."""
    market_fill_parts: int = 1
    """A market order fills in this many fills (trade ids) at once."""
    latency_ms: float = 0
    seed: int = 0
    reject_rate: float = 0
    rate_limit_rate: float = 0
    server_error_rate: float = 0
    timeout_after_place_rate: float = 0
    fill_at: FillAt = "latest"
    """``latest``: a new order is priced at the latest ticker the mock was given; ``intent``: at
    the order's ``reference_price`` and ``market_time`` (the latest ticker when it has none)."""


def pricing_quote(request: OrderRequest, latest: Quote | None, fill_at: FillAt) -> Quote | None:
    """The price a new order is judged and filled at (before slippage), with its event time.

    ``intent`` takes the request's reference price only with its market time: a price without
    a time could not stamp the fill. Neither given: the latest price, and ``None`` is no trade."""
    if (
        fill_at == "intent"
        and request.reference_price is not None
        and request.market_time is not None
    ):
        return Quote(price=request.reference_price, time=request.market_time)
    return latest


class MockOrderRow(SQLModel, table=True):
    __tablename__ = "mock_exchange_orders_v2"

    client_order_id: str = Field(primary_key=True, max_length=128)
    exchange_order_id: str = Field(index=True, max_length=64)
    product_id: str = Field(index=True, max_length=64)
    side: str = Field(max_length=4)
    order_type: str = Field(default="market", max_length=8)
    quote_size: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    base_size: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    limit_price: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    status: str = Field(max_length=16, index=True)
    filled_size: Decimal = Field(default=Decimal(0), sa_type=ExactDecimal)
    number_of_fills: int = 0
    reject_reason: str | None = Field(default=None, max_length=64)
    reject_message: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(sa_type=UtcDateTime)


class MockFillRow(SQLModel, table=True):
    __tablename__ = "mock_exchange_fills_v1"

    trade_id: str = Field(primary_key=True, max_length=64)
    exchange_order_id: str = Field(index=True, max_length=64)
    sequence: int
    price: Decimal = Field(sa_type=ExactDecimal)
    size: Decimal = Field(sa_type=ExactDecimal)
    size_in_quote: bool = False
    commission: Decimal = Field(sa_type=ExactDecimal)
    liquidity_indicator: str = Field(max_length=8)
    trade_time: datetime = Field(sa_type=UtcDateTime)


MOCK_TABLES: list[type[SQLModel]] = [MockOrderRow, MockFillRow, MockStopRow]
_ORDERS = MockOrderRow.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
_KNOWN = sa_select(_ORDERS.c.client_order_id).where(_ORDERS.c.client_order_id == bindparam("cid"))
"""Compiled once: every order placed is first looked for (a repeated client_order_id)."""


@dataclass(frozen=True)
class PlacedOrder:
    """A market order's answer in one piece (:meth:`MockExchange.place_market_order`)."""

    exchange_order_id: str
    client_order_id: str
    status: str
    fills: tuple[Fill, ...]
    reason: Reason | None


def _insert_new(session: Session) -> None:
    """Insert the rows added to ``session`` (a new order's: the order, its fills, its stop) with
    Core statements compiled once, instead of flushing them through the unit of work; the
    objects stay as they are, detached."""
    for row in list(session.new):
        table = type(row).__table__
        session.expunge(row)
        session.connection().execute(
            insert_of(table), {column.key: getattr(row, column.key) for column in table.columns}
        )


def _by_exchange_id(session: Session, exchange_order_id: str) -> MockOrderRow:
    row = session.exec(
        select(MockOrderRow).where(MockOrderRow.exchange_order_id == exchange_order_id)
    ).first()
    if row is None:
        raise OrderNotFound(f"mock exchange: no order {exchange_order_id}")
    return row


def _matched_since(session: Session, row: MockOrderRow, time: datetime) -> bool:
    """Whether the order already has a fill at or after ``time`` (market time)."""
    query = select(MockFillRow.trade_id).where(
        MockFillRow.exchange_order_id == row.exchange_order_id, MockFillRow.trade_time >= time
    )
    return session.exec(query).first() is not None


def _as_order(
    row: MockOrderRow, fills: list[MockFillRow] | None = None, stop: MockStopRow | None = None
) -> ExchangeOrder:
    return ExchangeOrder(
        exchange_order_id=row.exchange_order_id,
        client_order_id=row.client_order_id,
        product_id=row.product_id,
        side=row.side,
        status=row.status,
        filled_size=row.filled_size,
        number_of_fills=row.number_of_fills,
        created_time=row.created_at,
        reject_reason=row.reject_message and f"{row.reject_reason}: {row.reject_message}",
        fills=tuple(_as_fill(fill) for fill in fills) if fills else None,
        base_size=row.base_size,
        limit_price=row.limit_price,
        stop_price=stop.stop_price if stop is not None else None,
    )


def _as_fill(row: MockFillRow) -> ExchangeFill:
    return ExchangeFill(
        trade_id=row.trade_id,
        price=row.price,
        size=row.size,
        size_in_quote=row.size_in_quote,
        commission=row.commission,
        liquidity_indicator=row.liquidity_indicator,
        trade_time=row.trade_time,
        # Like Coinbase, a unique id per fill record besides the trade id (the mock never
        # adjusts a fill, so every record is a FILL).
        entry_id=str(uuid.uuid5(MOCK_NAMESPACE, f"{row.trade_id}:entry")),
        trade_type="FILL",
    )


class MockExchange:
    def __init__(
        self,
        engine: Engine,
        products: dict[str, Product],
        fee_rate: Decimal | None,
        quote_of: Callable[[str], Quote | None],
        settings: MockSettings | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        settings = settings or MockSettings()
        if fee_rate is not None:
            settings = MockSettings(**{**settings.__dict__, "taker_fee_rate": fee_rate})
        self.settings = settings
        self._engine = engine
        create_tables(engine, MOCK_TABLES)  # the mock owns its book (idempotent)
        self._products = products
        self._quote_of = quote_of
        self._sleep = sleep
        self._clock = clock
        self._random = random.Random(settings.seed)
        self._lock = threading.Lock()
        self.queued_faults: deque[str] = deque()
        """Faults for the next calls, in order, before any drawn by probability (tests)."""
        self.calls = 0
        self._resting: set[str] | None = None  # products with resting orders (None: not read yet)

    # -- the exchange's API -----------------------------------------------------------------------

    def place(self, request: OrderRequest) -> ExchangeOrder:
        with self._lock:
            fault = self._enter("place")
            with Session(self._engine, expire_on_commit=False) as session:
                if session.connection().execute(_KNOWN, {"cid": request.client_order_id}).first():
                    existing = session.get(MockOrderRow, request.client_order_id)
                    assert existing is not None
                    return _as_order(existing)
                row = self._new_order(session, request, rejected=fault == "reject")
                # A new order's fills are all made here: answered with it, no second call.
                made = [fill for fill in session.new if isinstance(fill, MockFillRow)]
                _insert_new(session)
                session.commit()
            if row.status == "OPEN" and self._resting is not None:
                self._resting.add(row.product_id)
            if fault == "timeout_after_place":
                raise OutcomeUnknown("mock exchange: timed out after placing the order")
            return _as_order(row, sorted(made, key=lambda fill: fill.sequence))

    def get(self, exchange_order_id: str) -> ExchangeOrder:
        with self._lock:
            self._enter("get")
            with Session(self._engine) as session:
                row = _by_exchange_id(session, exchange_order_id)
            if row.status == "OPEN" and self._resting is not None:
                # Placed by another executor instance (this one took it over): match it too.
                self._resting.add(row.product_id)
            return _as_order(row)

    def fills(self, exchange_order_id: str) -> list[ExchangeFill]:
        with self._lock:
            self._enter("fills")
            with Session(self._engine) as session:
                rows = session.exec(
                    select(MockFillRow)
                    .where(MockFillRow.exchange_order_id == exchange_order_id)
                    .order_by(col(MockFillRow.sequence))
                ).all()
                return [_as_fill(row) for row in rows]

    def find(self, client_order_id: str, product_id: str, since: datetime) -> ExchangeOrder | None:
        with self._lock:
            self._enter("find")
            with Session(self._engine) as session:
                row = session.get(MockOrderRow, client_order_id)
                return _as_order(row) if row is not None else None

    def cancel(self, exchange_order_id: str) -> None:
        with self._lock:
            self._enter("cancel")
            with Session(self._engine) as session:
                row = _by_exchange_id(session, exchange_order_id)
                if row.status == "OPEN":
                    row.status = "CANCELLED"
                    session.add(row)
                    session.commit()

    def open_orders(self) -> list[ExchangeOrder]:
        with self._lock:
            self._enter("list")
            with Session(self._engine) as session:
                rows = list(session.exec(select(MockOrderRow).where(MockOrderRow.status == "OPEN")))
                stops = stops_of(session, [row.client_order_id for row in rows])
                return [_as_order(row, stop=stops.get(row.client_order_id)) for row in rows]

    # -- the market -------------------------------------------------------------------------------

    def on_quote(self, product_id: str) -> int:
        """Match resting limit orders of ``product_id`` against its latest price; returns how
        many fills that made. Blocking (run it off the event loop)."""
        return self._match(product_id, self._quote_of(product_id))

    def catch_up(self, product_id: str, missed: list[Quote]) -> int:
        """Match resting orders against prices the mock missed (the executor was down while the
        exchange, in the model, kept trading), oldest first, each at its own event time; returns
        how many fills that made. A price at or before a fill the order has is not matched again,
        so catching up twice fills nothing twice."""
        return sum(self._match(product_id, quote) for quote in sorted(missed, key=lambda q: q.time))

    def _match(self, product_id: str, quote: Quote | None) -> int:
        product = self._products.get(product_id)
        if quote is None or product is None:
            return 0
        if self._resting is not None and product_id not in self._resting:
            return 0  # most prices: nothing rests, no session, no query
        made = 0
        with self._lock, Session(self._engine, expire_on_commit=False) as session:
            if self._resting is None:
                self._resting = set(
                    session.exec(
                        select(MockOrderRow.product_id).where(MockOrderRow.status == "OPEN")
                    ).all()
                )
            if product_id not in self._resting:
                return 0
            # Locked (PostgreSQL): two executor instances hear the same price; the second waits
            # and then sees the first one's fill at this price's time, and skips the order.
            resting = session.exec(
                select(MockOrderRow)
                .where(MockOrderRow.product_id == product_id, MockOrderRow.status == "OPEN")
                .order_by(col(MockOrderRow.created_at))
                .with_for_update()
            ).all()
            stops = stops_of(session, [row.client_order_id for row in resting])
            for row in resting:
                assert row.limit_price is not None
                if _matched_since(session, row, quote.time):
                    continue  # one match per order and market time, however many listen
                stop = stops.get(row.client_order_id)
                # A price from before the order was placed, or before its stop triggered, never
                # fills it (a restart's catch-up hands over prices already heard).
                since = row.created_at if stop is None else stop.triggered_at
                if since is not None and quote.time < since:
                    continue
                if stop is not None and stop.triggered_at is None:
                    if quote.time < row.created_at or not reaches_stop(
                        row.side, stop.stop_price, quote.price
                    ):
                        continue  # a price from before the stop was placed never triggers it
                    stop.triggered_at = quote.time  # from this tick on, a limit order
                    session.add(stop)
                    made += self._fill_if_marketable(session, row, product, quote)
                    continue
                crosses = (
                    quote.price <= row.limit_price
                    if row.side == "buy"
                    else quote.price >= row.limit_price
                )
                if crosses:
                    made += self._fill_limit(session, row, product, row.limit_price, "MAKER", quote)
            if all(row.status != "OPEN" for row in resting):
                self._resting.discard(product_id)
            session.commit()
        return made

    # -- a market order in one call (kept for callers that want the whole answer) -----------------

    def place_market_order(
        self,
        *,
        client_order_id: str,
        product_id: str,
        side: Side,
        quote_size: Decimal | None,
        base_size: Decimal | None,
    ) -> PlacedOrder:
        order = self.place(
            OrderRequest(client_order_id, product_id, side, "market", quote_size, base_size)
        )
        fills = tuple(convert_fill(fill) for fill in self.fills(order.exchange_order_id))
        reason = None
        if order.status == "FAILED":
            code, _, message = (order.reject_reason or "REJECTED: rejected").partition(": ")
            reason = Reason(code=code, message=message or code)
        return PlacedOrder(order.exchange_order_id, client_order_id, order.status, fills, reason)

    # -- inside -----------------------------------------------------------------------------------

    def _enter(self, call: str) -> str | None:
        """Latency, then the fault this call draws (429 and 5xx raise here, before any effect)."""
        self.calls += 1
        settings = self.settings
        if settings.latency_ms:
            self._sleep(settings.latency_ms / 1000 * (0.5 + self._random.random()))
        fault = self.queued_faults.popleft() if self.queued_faults else None
        if fault is None:
            draw = self._random.random()
            for name, rate in (
                ("rate_limit", settings.rate_limit_rate),
                ("server_error", settings.server_error_rate),
                ("reject", settings.reject_rate if call == "place" else 0),
                (
                    "timeout_after_place",
                    settings.timeout_after_place_rate if call == "place" else 0,
                ),
            ):
                if draw < rate:
                    fault = name
                    break
                draw -= rate
        if fault == "rate_limit":
            raise RateLimited("mock exchange: 429 Too Many Requests", retry_after_s=None)
        if fault == "server_error":
            raise ExchangeUnavailable("mock exchange: 503 Service Unavailable")
        if fault in ("reject", "timeout_after_place") and call != "place":
            return None
        return fault

    def _new_order(self, session: Session, request: OrderRequest, rejected: bool) -> MockOrderRow:
        quote = pricing_quote(request, self._quote_of(request.product_id), self.settings.fill_at)
        row = MockOrderRow(
            client_order_id=request.client_order_id,
            exchange_order_id=str(uuid.uuid5(MOCK_NAMESPACE, request.client_order_id)),
            product_id=request.product_id,
            side=request.side,
            # A stop-limit is kept as the limit order it becomes; its stop waits beside it.
            order_type="limit" if request.order_type == STOP_LIMIT else request.order_type,
            quote_size=request.quote_size,
            base_size=request.base_size,
            limit_price=request.limit_price,
            status="FAILED",
            created_at=quote.time if quote is not None else self._clock(),
        )
        session.add(row)
        product = self._products.get(request.product_id)
        problem = self._problem(request, product, quote, rejected)
        if problem is not None:
            row.reject_reason, row.reject_message = problem
            return row
        assert product is not None and quote is not None
        if request.order_type == "market":
            self._fill_market(session, row, request, product, quote)
            return row
        row.status = "OPEN"
        if request.order_type == STOP_LIMIT:
            assert request.stop_price is not None
            session.add(
                MockStopRow(client_order_id=row.client_order_id, stop_price=request.stop_price)
            )
            return row
        self._fill_if_marketable(session, row, product, quote)
        return row

    def _fill_if_marketable(
        self, session: Session, row: MockOrderRow, product: Product, quote: Quote
    ) -> int:
        """A limit order the price ``quote`` already crosses fills now, as taker (slipped, never
        past its limit); returns how many fills that made."""
        assert row.limit_price is not None
        marketable = (
            quote.price <= row.limit_price if row.side == "buy" else quote.price >= row.limit_price
        )
        if not marketable:
            return 0
        price = self._slipped(quote.price, row.side, product)
        price = min(price, row.limit_price) if row.side == "buy" else max(price, row.limit_price)
        return self._fill_limit(session, row, product, price, "TAKER", quote)

    def _problem(
        self,
        request: OrderRequest,
        product: Product | None,
        quote: Quote | None,
        rejected: bool,
    ) -> tuple[str, str] | None:
        if rejected:
            return ("INJECTED_REJECT", "the mock exchange rejected the order (injected failure)")
        if product is None:
            return ("UNKNOWN_PRODUCT", f"{request.product_id} is not traded here")
        if quote is None:
            return (
                "NO_MARKET_PRICE",
                f"no market price for {request.product_id}: no price, no trade",
            )
        if request.limit_price is not None and request.limit_price % product.quote_increment:
            return ("INVALID_PRICE_PRECISION", f"{request.limit_price} is off the price increment")
        if request.order_type == STOP_LIMIT:
            if request.stop_price is None or request.limit_price is None:
                return ("INVALID_STOP_ORDER", "a stop-limit order needs a stop and a limit price")
            if request.stop_price % product.quote_increment:
                return (
                    "INVALID_PRICE_PRECISION",
                    f"{request.stop_price} is off the price increment",
                )
            refused = stop_refusal(request.side, request.stop_price, quote.price)
            if refused is not None:
                return refused
        size = request.base_size
        if size is not None and size % product.base_increment:
            return ("INVALID_SIZE_PRECISION", f"{size} is off the size increment")
        price = request.limit_price or quote.price
        if size is None:
            assert request.quote_size is not None
            size = (request.quote_size / price).quantize(product.base_increment, ROUND_DOWN)
        if size < product.base_min_size:
            return (
                "BELOW_MIN_SIZE",
                f"{size} is below the product's minimum size {product.base_min_size}"
                + (f" (from {request.quote_size} quote at {price})" if request.quote_size else ""),
            )
        if size * price < product.quote_min_size:
            return (
                "BELOW_MIN_NOTIONAL",
                f"{size} at {price} is below the minimum order value {product.quote_min_size}",
            )
        return None

    def _slipped(self, price: Decimal, side: str, product: Product) -> Decimal:
        move = price * self.settings.slippage_bps / Decimal(10_000)
        if side == "buy":
            return (price + move).quantize(product.quote_increment, rounding=ROUND_UP)
        return (price - move).quantize(product.quote_increment, rounding=ROUND_DOWN)

    def _fill_market(
        self,
        session: Session,
        row: MockOrderRow,
        request: OrderRequest,
        product: Product,
        quote: Quote,
    ) -> None:
        price = self._slipped(quote.price, request.side, product)
        if request.base_size is not None:
            size = request.base_size
        else:
            assert request.quote_size is not None
            size = (request.quote_size / price).quantize(product.base_increment, ROUND_DOWN)
        parts = max(1, self.settings.market_fill_parts)
        part = (size / parts).quantize(product.base_increment, ROUND_DOWN)
        remaining = size
        for n in range(parts):
            piece = remaining if n == parts - 1 else part
            if piece <= 0:
                continue
            self._add_fill(
                session, row, product, price, piece, "TAKER", quote.time,
                in_quote=request.quote_size is not None,
            )  # fmt: skip
            remaining -= piece
        row.status = "FILLED"

    def _fill_limit(
        self,
        session: Session,
        row: MockOrderRow,
        product: Product,
        price: Decimal,
        liquidity: str,
        quote: Quote,
    ) -> int:
        assert row.base_size is not None
        remaining = row.base_size - row.filled_size
        piece = (remaining * self.settings.partial_fill_ratio).quantize(
            product.base_increment, ROUND_DOWN
        )
        if piece < product.base_min_size or remaining - piece < product.base_min_size:
            piece = remaining  # what is left is too small to rest on its own
        self._add_fill(session, row, product, price, piece, liquidity, quote.time, in_quote=False)
        if row.filled_size >= row.base_size:
            row.status = "FILLED"
        session.add(row)
        return 1

    def _add_fill(
        self,
        session: Session,
        row: MockOrderRow,
        product: Product,
        price: Decimal,
        size: Decimal,
        liquidity: str,
        at: datetime,
        in_quote: bool,
    ) -> None:
        rate = (
            self.settings.maker_fee_rate if liquidity == "MAKER" else self.settings.taker_fee_rate
        )
        row.number_of_fills += 1
        row.filled_size += size
        session.add(
            MockFillRow(
                trade_id=str(
                    uuid.uuid5(MOCK_NAMESPACE, f"{row.client_order_id}:fill:{row.number_of_fills}")
                ),
                exchange_order_id=row.exchange_order_id,
                sequence=row.number_of_fills,
                price=price,
                # Coinbase reports a quote-sized order's fills in quote currency.
                size=size * price if in_quote else size,
                size_in_quote=in_quote,
                commission=fee_for(size * price, rate, product),
                liquidity_indicator=liquidity,
                trade_time=at,
            )
        )
