"""Coinbase Advanced Trade through ``coinbase-advanced-py``'s ``RESTClient`` (blocking).

What the SDK does not do for us, done here (see the team's STACK-NOTES.md, beside the repository):

* a timeout on every request (its default is none at all); a read timeout means the request may
  have taken effect: :class:`OutcomeUnknown`, never "failed";
* HTTP errors turned into our failure kinds: 429 (with ``Retry-After``) and 5xx are retryable,
  404 is "not found", other 4xx refuse the order; a ``success: false`` answer (HTTP 200) too;
* ``create_order``'s ``success_response`` / ``error_response`` are plain dicts, not objects;
* ``client_order_id`` is always ours (the SDK would invent a random one for ``""``);
* credentials passed explicitly (never read from ``COINBASE_API_*`` at import) and never put in a
  message: errors carry the status and Coinbase's error code, not the request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import requests
from coinbase.rest import RESTClient

from services.executor.exchanges.base import (
    ExchangeError,
    ExchangeOrder,
    ExchangeUnavailable,
    OrderNotFound,
    OrderRefused,
    OrderRequest,
    OutcomeUnknown,
    RateLimited,
)
from services.executor.orders import ExchangeFill
from services.executor.products import ProductRules

T = TypeVar("T")
PAGE = 250
LOOKBACK = timedelta(days=1)

# The SDK gives its logger its own stderr handler at import (plain text, every HTTP error with
# the response body): send it through ours instead, structured, errors only.
_sdk_log = logging.getLogger("coinbase.RESTClient")
_sdk_log.handlers.clear()
_sdk_log.propagate = True
_sdk_log.setLevel(logging.ERROR)


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else Decimal(0)


def _decimal_or_none(value: Any) -> Decimal | None:
    return Decimal(str(value)) if value not in (None, "") else None


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _error_code(response: requests.Response | None) -> str:
    try:
        body = response.json() if response is not None else {}
    except ValueError:
        return ""
    return str(body.get("error") or body.get("error_response", {}).get("error") or "")


class CoinbaseExchange:
    def __init__(self, client: RESTClient):
        self.client = client

    @classmethod
    def from_settings(cls, settings: Any) -> CoinbaseExchange:
        client = RESTClient(
            api_key=settings.coinbase_api_key.get_secret_value(),
            api_secret=settings.coinbase_api_secret.get_secret_value(),
            base_url=settings.coinbase_base_url,
            timeout=settings.coinbase_timeout_s,
        )
        if settings.coinbase_ca_file is not None:
            # REQUESTS_CA_BUNDLE (set on these machines) would override session.verify.
            client.session.trust_env = False
            client.session.verify = str(settings.coinbase_ca_file)
        return cls(client)

    # -- calls ------------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except requests.exceptions.ConnectTimeout:
            raise ExchangeUnavailable(f"coinbase {what}: could not connect in time") from None
        except requests.exceptions.Timeout:
            raise OutcomeUnknown(
                f"coinbase {what}: no answer in time; it may have taken effect"
            ) from None
        except requests.exceptions.HTTPError as error:
            response = error.response
            status = response.status_code if response is not None else 0
            code = _error_code(response)
            message = f"coinbase {what}: HTTP {status}" + (f" {code}" if code else "")
            if status == 429:
                retry_after = response.headers.get("Retry-After") if response is not None else None
                seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
                raise RateLimited(message, retry_after_s=seconds) from None
            if status >= 500:
                raise ExchangeUnavailable(message) from None
            if status == 404:
                raise OrderNotFound(message) from None
            if status in (401, 403):
                raise ExchangeError(message, code="EXCHANGE_UNAUTHORIZED") from None
            raise OrderRefused(message, code=_code_or(code, "ORDER_REFUSED")) from None
        except requests.exceptions.ConnectionError:
            raise ExchangeUnavailable(f"coinbase {what}: connection failed") from None

    def place(self, request: OrderRequest) -> ExchangeOrder:
        if not request.client_order_id:
            raise ValueError("client_order_id is required (the SDK would invent a random one)")
        if request.order_type == "stop_limit":
            configuration: dict[str, Any] = {
                "stop_limit_stop_limit_gtc": {
                    "base_size": str(request.base_size),
                    "limit_price": str(request.limit_price),
                    "stop_price": str(request.stop_price),
                    # A sell stop triggers when the last trade price falls to the stop.
                    "stop_direction": "STOP_DIRECTION_STOP_DOWN"
                    if request.side == "sell"
                    else "STOP_DIRECTION_STOP_UP",
                }
            }
        elif request.order_type == "limit":
            configuration = {
                "limit_limit_gtc": {
                    "base_size": str(request.base_size),
                    "limit_price": str(request.limit_price),
                    "post_only": False,
                }
            }
        elif request.quote_size is not None:
            configuration = {"market_market_ioc": {"quote_size": str(request.quote_size)}}
        else:
            configuration = {"market_market_ioc": {"base_size": str(request.base_size)}}
        answer = self._call(
            "create_order",
            lambda: self.client.create_order(
                client_order_id=request.client_order_id,
                product_id=request.product_id,
                side=request.side.upper(),
                order_configuration=configuration,
            ),
        )
        success = answer["success_response"] or {}
        order_id = success.get("order_id") or answer["order_id"]
        if answer["success"] and order_id:
            return ExchangeOrder(
                exchange_order_id=order_id,
                client_order_id=request.client_order_id,
                product_id=request.product_id,
                side=request.side,
                status="PENDING",
                # Just created: what filled is asked on the next poll (get_order, get_fills).
                number_of_fills=0,
            )
        # A refusal may be Coinbase saying it already has this client_order_id: ask before
        # calling the order refused (rare: only after an unknown outcome).
        existing = self.find(
            request.client_order_id, request.product_id, datetime.now(UTC) - LOOKBACK
        )
        if existing is not None:
            return existing
        failure = answer["error_response"] or {}
        code = failure.get("error") or answer["failure_reason"] or "ORDER_REFUSED"
        if code.startswith("UNKNOWN_") and failure.get("preview_failure_reason"):
            code = failure["preview_failure_reason"]  # e.g. PREVIEW_INVALID_BASE_SIZE_TOO_SMALL
        detail = failure.get("message") or failure.get("preview_failure_reason") or code
        raise OrderRefused(f"coinbase refused the order: {detail}", code=_code_or(code, ""))

    def get(self, exchange_order_id: str) -> ExchangeOrder:
        answer = self._call("get_order", lambda: self.client.get_order(exchange_order_id))
        return self._order(answer.order)

    def fills(self, exchange_order_id: str) -> list[ExchangeFill]:
        fills = []
        for page in self._pages(
            "get_fills",
            lambda cursor: self.client.get_fills(
                order_ids=[exchange_order_id], limit=PAGE, cursor=cursor
            ),
        ):
            for fill in getattr(page, "fills", None) or []:
                fills.append(
                    ExchangeFill(
                        trade_id=fill.trade_id,
                        price=_decimal(fill.price),
                        size=_decimal(fill.size),
                        size_in_quote=_flag(getattr(fill, "size_in_quote", False)),
                        commission=_decimal(getattr(fill, "commission", 0)),
                        liquidity_indicator=str(getattr(fill, "liquidity_indicator", "TAKER")),
                        trade_time=_time(fill.trade_time) or datetime.now(UTC),
                        entry_id=getattr(fill, "entry_id", None) or None,
                        trade_type=str(getattr(fill, "trade_type", "") or "FILL"),
                    )
                )
        return fills

    def find(self, client_order_id: str, product_id: str, since: datetime) -> ExchangeOrder | None:
        start = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for page in self._pages(
            "list_orders",
            lambda cursor: self.client.list_orders(
                product_ids=[product_id], start_date=start, limit=PAGE, cursor=cursor
            ),
        ):
            for order in getattr(page, "orders", None) or []:
                if order.client_order_id == client_order_id:
                    return self._order(order)
        return None

    def cancel(self, exchange_order_id: str) -> None:
        # A failed cancel (already final, already cancelling) is not an error: the next poll
        # says what the order is.
        self._call(
            "cancel_orders", lambda: self.client.cancel_orders(order_ids=[exchange_order_id])
        )

    def product(self, product_id: str) -> ProductRules | None:
        """The product's trading rules as Coinbase publishes them; ``None``: not listed (404)."""
        try:
            answer = self._call("get_product", lambda: self.client.get_product(product_id))
        except OrderNotFound:
            return None

        def optional(name: str) -> Decimal | None:
            value = getattr(answer, name, None)
            return _decimal(value) if value not in (None, "") else None

        return ProductRules(
            product_id=getattr(answer, "product_id", product_id),
            base_increment=_decimal(answer.base_increment),
            quote_increment=_decimal(answer.quote_increment),
            base_min_size=_decimal(answer.base_min_size),
            quote_min_size=_decimal(answer.quote_min_size),
            base_max_size=optional("base_max_size"),
            quote_max_size=optional("quote_max_size"),
            status=str(getattr(answer, "status", "") or ""),
            is_disabled=_flag(getattr(answer, "is_disabled", False)),
            trading_disabled=_flag(getattr(answer, "trading_disabled", False)),
            cancel_only=_flag(getattr(answer, "cancel_only", False)),
            limit_only=_flag(getattr(answer, "limit_only", False)),
            post_only=_flag(getattr(answer, "post_only", False)),
            fetched_at=datetime.now(UTC),
        )

    def open_orders(self) -> list[ExchangeOrder]:
        found = []
        for page in self._pages(
            "list_orders",
            lambda cursor: self.client.list_orders(
                order_status=["OPEN"], limit=PAGE, cursor=cursor
            ),
        ):
            found.extend(self._order(order) for order in getattr(page, "orders", None) or [])
        return found

    # -- inside -----------------------------------------------------------------------------

    def _pages(self, what: str, fetch: Callable[[str | None], Any]) -> Iterator[Any]:
        cursor: str | None = None
        for _ in range(100):  # a bound, not a limit anyone should reach
            page = self._call(what, lambda at=cursor: fetch(at))
            yield page
            cursor = getattr(page, "cursor", None)
            if not cursor or getattr(page, "has_next", True) is False:
                return

    @staticmethod
    def _order(order: Any) -> ExchangeOrder:
        reject = getattr(order, "reject_reason", None) or None
        message = getattr(order, "reject_message", None) or None
        number = getattr(order, "number_of_fills", None)
        config = getattr(order, "order_configuration", None)
        stop = getattr(config, "stop_limit_stop_limit_gtc", None)
        terms = stop or getattr(config, "limit_limit_gtc", None)
        return ExchangeOrder(
            exchange_order_id=order.order_id,
            client_order_id=getattr(order, "client_order_id", "") or "",
            product_id=getattr(order, "product_id", ""),
            side=str(getattr(order, "side", "")).lower(),
            status=str(getattr(order, "status", "UNKNOWN")),
            filled_size=_decimal(getattr(order, "filled_size", 0)),
            number_of_fills=int(number) if number not in (None, "") else None,
            created_time=_time(getattr(order, "created_time", None)),
            reject_reason=f"{reject}: {message or reject}" if reject else None,
            size_inclusive_of_fees=_flag(getattr(order, "size_inclusive_of_fees", False)),
            total_value_after_fees=_decimal(getattr(order, "total_value_after_fees", 0)),
            base_size=_decimal_or_none(getattr(terms, "base_size", None)),
            limit_price=_decimal_or_none(getattr(terms, "limit_price", None)),
            stop_price=_decimal_or_none(getattr(stop, "stop_price", None)),
        )


def _code_or(code: str, fallback: str) -> str:
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in code.upper()).strip("_")
    return cleaned[:64] if len(cleaned) >= 2 and cleaned[0].isalpha() else fallback or "REFUSED"
