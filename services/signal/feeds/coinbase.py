"""Live market data from Coinbase Advanced Trade: REST polling of the public product ticker.

``RESTClient.get_public_market_trades`` (``GET /api/v3/brokerage/market/products/{id}/ticker``,
public: no key needed) answers with the latest trades, each with Coinbase's own trade time, and
the best bid and ask. Every trade not seen before becomes one ``Ticker`` whose time is the
exchange's event time; a poll that finds no new trade publishes nothing, so a silent market
(or a silent Coinbase) shows up as stale data in the signal service, never as a repeated price.

Polling rather than the SDK's WebSocket client: its reader stops silently when a callback raises,
and a poll that fails is simply the next poll. The loop never ends on an error: 429 waits for
``Retry-After`` (or backs off), 5xx, timeouts and connection failures back off exponentially up
to a limit, anything unexpected is logged and backed off too.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import requests
from coinbase.rest import RESTClient

from shared.contracts import Ticker
from shared.logging import get_logger

log = get_logger("tranche.signal")

# The SDK gives its logger its own stderr handler at import and logs every HTTP error with the
# body: send it through ours, errors only (the feed logs its own, structured).
_sdk_log = logging.getLogger("coinbase.RESTClient")
_sdk_log.handlers.clear()
_sdk_log.propagate = True
_sdk_log.setLevel(logging.ERROR)


# -- pure: which products, which trades are new, how long to wait ----------------------------

_PRODUCT = re.compile(r"^[A-Z0-9]{1,20}-[A-Z0-9]{1,20}$")


def parse_live_spec(spec: str) -> list[str]:
    """``"BTC-USD, ETH-USD"`` -> the product ids to follow; a malformed one is a ValueError
    naming the setting."""
    products = [part.strip() for part in spec.split(",") if part.strip()]
    for product_id in products:
        if not _PRODUCT.match(product_id):
            raise ValueError(
                f"TRANCHE_COINBASE_FEED: {product_id!r} is not a Coinbase product id such as "
                "BTC-USD"
            )
    if len(set(products)) != len(products):
        raise ValueError("TRANCHE_COINBASE_FEED names a product twice")
    return products


@dataclass
class Cursor:
    """The newest trade time published for a product, and the trade ids published at it (two
    trades can share a timestamp)."""

    time: datetime | None = None
    ids_at_time: set[str] = field(default_factory=set)

    def seen(self, trade_id: str, time: datetime) -> bool:
        if self.time is None:
            return False
        return time < self.time or (time == self.time and trade_id in self.ids_at_time)

    def advance(self, trade_id: str, time: datetime) -> None:
        if self.time is None or time > self.time:
            self.time, self.ids_at_time = time, {trade_id}
        elif time == self.time:
            self.ids_at_time.add(trade_id)


def _decimal(value: Any) -> Decimal | None:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() and number > 0 else None


def _time(value: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def new_tickers(product_id: str, answer: dict[str, Any], cursor: Cursor) -> list[Ticker]:
    """The trades of one ticker answer that ``cursor`` has not seen, oldest first, as Tickers
    (and ``cursor`` moved past them). On the first answer (an empty cursor) only the newest trade
    counts: the feed starts now, it does not replay the exchange's recent past. A trade without a
    usable price or time, or of another product, is skipped."""
    bid, ask = _decimal(answer.get("best_bid")), _decimal(answer.get("best_ask"))
    trades = []
    for trade in answer.get("trades") or []:
        price, time = _decimal(trade.get("price")), _time(trade.get("time"))
        trade_id = str(trade.get("trade_id") or "")
        if price is None or time is None or not trade_id:
            continue
        if trade.get("product_id") not in (None, product_id):
            continue
        trades.append((time, trade_id, price))
    trades.sort()
    if cursor.time is None:
        trades = trades[-1:]
    fresh = []
    for time, trade_id, price in trades:
        if cursor.seen(trade_id, time):
            continue
        cursor.advance(trade_id, time)
        fresh.append(
            Ticker(
                product_id=product_id,
                price=price,
                best_bid=bid,
                best_ask=ask,
                time=time.astimezone(UTC),
                source="coinbase",
            )
        )
    return fresh


def backoff_s(failures: int, base_s: float, max_s: float, retry_after_s: float | None) -> float:
    """Seconds to wait after ``failures`` failed polls in a row: Coinbase's ``Retry-After`` when
    it gave one (capped at ``max_s``), else ``base_s`` doubled per failure up to ``max_s``."""
    if retry_after_s is not None:
        return min(max(retry_after_s, base_s), max_s)
    return min(base_s * 2 ** max(failures - 1, 0), max_s)


# -- the loop ---------------------------------------------------------------------------------


class PollFailed(Exception):
    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


def _explain(error: Exception) -> PollFailed:
    if isinstance(error, requests.exceptions.HTTPError):
        response = error.response
        status = response.status_code if response is not None else 0
        retry_after = response.headers.get("Retry-After") if response is not None else None
        seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
        return PollFailed(f"HTTP {status}", seconds if status == 429 else None)
    if isinstance(error, requests.exceptions.Timeout):
        return PollFailed("no answer in time")
    if isinstance(error, requests.exceptions.ConnectionError):
        return PollFailed("connection failed")
    return PollFailed(f"{type(error).__name__}: {str(error)[:200]}")


def make_client(base_url: str, timeout_s: float, ca_file: str | None = None) -> RESTClient:
    """An unauthenticated client (public endpoints only: no key is ever needed or read)."""
    client = RESTClient(api_key=None, api_secret=None, base_url=base_url, timeout=timeout_s)
    if ca_file:
        # REQUESTS_CA_BUNDLE (set on some machines) would override session.verify.
        client.session.trust_env = False
        client.session.verify = ca_file
    return client


Publish = Callable[[Ticker], Awaitable[None]]


def counter(status: dict[str, object], key: str) -> int:
    """One counter of a feed's status (the dict also holds text, flags and times)."""
    value = status[key]
    assert isinstance(value, int), f"status {key!r} is not a counter: {value!r}"
    return value


class CoinbaseFeed:
    """Polls one product's ticker every ``interval_s`` and publishes the new trades."""

    def __init__(
        self,
        client: RESTClient,
        product_id: str,
        publish: Publish,
        *,
        interval_s: float = 1.0,
        max_backoff_s: float = 60.0,
        trades_per_poll: int = 50,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.client = client
        self.product_id = product_id
        self.publish = publish
        self.interval_s = interval_s
        self.max_backoff_s = max_backoff_s
        self.trades_per_poll = trades_per_poll
        self.sleep = sleep
        self.cursor = Cursor()
        self.failures = 0
        self.status: dict[str, object] = {
            "kind": "coinbase", "finished": False, "polls": 0, "ticks": 0, "errors": 0,
            "failing_since_polls": 0, "last_error": None, "next_poll_s": interval_s,
        }  # fmt: skip

    def _ask(self) -> dict[str, Any]:
        answer = self.client.get_public_market_trades(
            product_id=self.product_id, limit=self.trades_per_poll
        )
        return answer.to_dict() if hasattr(answer, "to_dict") else dict(answer)

    async def poll_once(self) -> float:
        """One poll; returns the seconds to wait before the next. Never raises (but cancels)."""
        self.status["polls"] = counter(self.status, "polls") + 1
        try:
            try:
                answer = await asyncio.to_thread(self._ask)
            except Exception as error:
                raise _explain(error) from None
            for ticker in new_tickers(self.product_id, answer, self.cursor):
                await self.publish(ticker)
                self.status["ticks"] = counter(self.status, "ticks") + 1
        except asyncio.CancelledError:
            raise
        except Exception as error:
            failed = error if isinstance(error, PollFailed) else _explain(error)
            self.failures += 1
            wait = backoff_s(self.failures, self.interval_s, self.max_backoff_s,
                             failed.retry_after_s)  # fmt: skip
            self.status |= {
                "errors": counter(self.status, "errors") + 1,
                "failing_since_polls": self.failures, "last_error": str(failed),
                "next_poll_s": wait,
            }  # fmt: skip
            log.warning("coinbase.poll_failed", product_id=self.product_id, error=str(failed),
                        failures=self.failures, retry_in_s=wait)  # fmt: skip
            return wait
        if self.failures:
            log.info("coinbase.poll_recovered", product_id=self.product_id, after=self.failures)
        self.failures = 0
        self.status |= {"failing_since_polls": 0, "next_poll_s": self.interval_s}
        if self.cursor.time is not None:
            self.status["last_trade_time"] = self.cursor.time.isoformat()
        return self.interval_s

    async def run(self) -> None:
        """Poll until cancelled."""
        log.info("coinbase.feed_started", product_id=self.product_id, interval_s=self.interval_s)
        while True:
            await self.sleep(await self.poll_once())
