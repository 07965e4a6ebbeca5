"""What the executor needs from an exchange, and the failures it tells apart.

Both exchanges (the mock and Coinbase) are blocking and answer in Coinbase's terms: statuses are
Coinbase's strings, fills are :class:`~services.executor.orders.ExchangeFill` (``size_in_quote``
included). :mod:`services.executor.gateway` runs them off the event loop behind one rate limiter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from services.executor.orders import ExchangeFill
from services.executor.products import ProductRules


@dataclass(frozen=True)
class OrderRequest:
    client_order_id: str
    """As the exchange sees it (the executor's prefix + the approval's ``client_order_id``)."""
    product_id: str
    side: str
    order_type: str
    quote_size: Decimal | None = None
    base_size: Decimal | None = None
    limit_price: Decimal | None = None
    reference_price: Decimal | None = None
    """The intent's price (what the signal saw); Coinbase ignores it, the mock can fill at it."""
    market_time: datetime | None = None
    """When the market showed ``reference_price`` (event time)."""
    stop_price: Decimal | None = None
    """A ``stop_limit`` order: the last trade price that turns it into a limit order at
    ``limit_price`` (a sell stop triggers when the price falls to it: STOP_DIRECTION_STOP_DOWN)."""


@dataclass(frozen=True)
class ExchangeOrder:
    exchange_order_id: str
    client_order_id: str
    product_id: str
    side: str
    status: str
    """Coinbase's status: PENDING, OPEN, FILLED, CANCELLED, EXPIRED, FAILED, UNKNOWN, QUEUED,
    CANCEL_QUEUED."""
    filled_size: Decimal = Decimal(0)
    number_of_fills: int | None = None
    created_time: datetime | None = None
    reject_reason: str | None = None
    size_inclusive_of_fees: bool = False
    """A quote-sized order whose quote size includes the fee (Coinbase's flag)."""
    total_value_after_fees: Decimal = Decimal(0)
    """What the order cost (a buy) or brought (a sell) in quote, fees included."""
    base_size: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    """A resting order's terms, as the exchange lists them (a limit order: base size and limit
    price; a stop-limit: its stop price too): what an order adopted on start is."""
    fills: tuple[ExchangeFill, ...] | None = field(default=None, compare=False)
    """Every fill of the order when the exchange answered them with it (the mock, placing an
    order it fills at once); ``None``: ask ``fills`` when the counts say there are new ones.
    Not part of what the order is: the same order answered with or without them is equal."""


class ExchangeError(Exception):
    """Every failure has a stable code and a sentence (never a credential)."""

    code = "EXCHANGE_ERROR"
    retryable = False

    def __init__(self, message: str, code: str | None = None, retry_after_s: float | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.retry_after_s = retry_after_s


class RateLimited(ExchangeError):
    """HTTP 429: too many requests; retried after a backoff (or the exchange's Retry-After)."""

    code = "RATE_LIMITED"
    retryable = True


class ExchangeUnavailable(ExchangeError):
    """HTTP 5xx or a refused connection: retried with backoff."""

    code = "EXCHANGE_UNAVAILABLE"
    retryable = True


class OutcomeUnknown(ExchangeError):
    """A timeout: the request may or may not have taken effect. Never "failed": ask again by
    ``client_order_id``."""

    code = "OUTCOME_UNKNOWN"


class OrderRefused(ExchangeError):
    """The exchange refused the order (HTTP 4xx or ``success: false``): final."""

    code = "ORDER_REFUSED"


class OrderNotFound(ExchangeError):
    code = "ORDER_NOT_FOUND"


class Exchange(Protocol):
    """Blocking calls; each may raise :class:`ExchangeError`."""

    def place(self, request: OrderRequest) -> ExchangeOrder:
        """Place an order; a ``client_order_id`` the exchange knows returns that order."""
        ...

    def get(self, exchange_order_id: str) -> ExchangeOrder: ...

    def fills(self, exchange_order_id: str) -> list[ExchangeFill]: ...

    def find(self, client_order_id: str, product_id: str, since: datetime) -> ExchangeOrder | None:
        """The order with this ``client_order_id`` placed since ``since``, if there is one."""
        ...

    def cancel(self, exchange_order_id: str) -> None:
        """Ask to cancel; a cancel of a final order is not an error (the next poll tells)."""
        ...

    def open_orders(self) -> list[ExchangeOrder]:
        """Every resting order of the account (reconciliation adopts ours among them)."""
        ...


class ListsProducts(Protocol):
    """An exchange that publishes its products' trading rules (Coinbase; the mock trades by the
    bots file's rules)."""

    def product(self, product_id: str) -> ProductRules | None:
        """The product's rules; ``None``: the exchange does not list it."""
        ...
