"""Live market data from Coinbase Advanced Trade over its WebSocket, REST polling as the fallback.

One connection per product through the SDK's ``WSClient`` (its async API, on the service's own
event loop), unauthenticated: ``heartbeats``, ``ticker`` and ``market_trades`` are public, no key
is needed or read. Each trade becomes one Ticker at Coinbase's trade time
(:mod:`services.signal.feeds.coinbase_stream` reads the messages).

* The SDK's reader stops silently if ``on_message`` raises, and ends without a word when the
  server closes the connection cleanly. So ``on_message`` only queues the raw text (it cannot
  raise), the SDK's own retry is off, and this loop decides: a closed connection, a connection
  silent for ``silence_s`` (heartbeats come every second) or an error message from Coinbase ends
  the connection, and a new one is opened after a back-off (doubling up to ``max_backoff_s``).
* Lost messages: a jump in ``sequence_num`` or in ``heartbeat_counter`` is logged, counted on
  ``/metrics`` (``tranche_signal_feed_gaps_total``), and the product is resubscribed (Coinbase then
  sends a snapshot of its recent trades) and polled once over REST: trades the gap hid are
  published, oldest first, through the cursor both transports share (never one twice).
* Fallback: after ``fallback_after`` failed connection attempts in a row the REST feed
  (:class:`~services.signal.feeds.coinbase.CoinbaseFeed`) polls instead, and every
  ``retry_ws_s`` the WebSocket is tried again; the first connection that succeeds stops polling.
* Stale detection is the signal service's, as for every feed: no Ticker for ``stale_after_s``.
* Certificates: the SDK opens ``wss://`` with an ``ssl.SSLContext()`` that checks nothing (no
  certificate, no host name). This feed's prices can trigger trades, so :class:`VerifiedWSClient`
  opens the connection with the system's trust store (or ``ca_file``) and checks the host name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import websockets
from coinbase.constants import USER_AGENT
from coinbase.websocket import WSClient, WSClientException
from prometheus_client import Counter, Gauge

from services.signal.config import SignalSettings
from services.signal.feeds.coinbase import CoinbaseFeed, Publish, backoff_s, counter
from services.signal.feeds.coinbase_stream import CHANNELS, Reading, StreamReader
from shared.logging import get_logger

log = get_logger("tranche.signal")

# As for the REST client: the SDK's logger gets its own stderr handler at import; send it through
# ours, errors only (the feed logs its own, structured).
_sdk_log = logging.getLogger("coinbase.WSClient")
_sdk_log.handlers.clear()
_sdk_log.propagate = True
_sdk_log.setLevel(logging.ERROR)

GAPS = Counter(
    "tranche_signal_feed_gaps_total",
    "Messages lost on the Coinbase WebSocket (kind: sequence or heartbeat), each gap once",
    ["product_id", "kind"],
)
DISCONNECTS = Counter(
    "tranche_signal_feed_disconnects_total",
    "Coinbase WebSocket connections ended or refused (reason: closed, silent, refused, failed)",
    ["product_id", "reason"],
)
FALLBACK = Gauge(
    "tranche_signal_feed_rest_fallback",
    "1 while a product's live data comes from REST polling because the WebSocket cannot connect",
    ["product_id"],
)


class VerifiedWSClient(WSClient):  # type: ignore[misc]  # the SDK's classes are untyped
    """The SDK's ``WSClient``, but a ``wss://`` connection checks the server's certificate and
    host name (the SDK's ``open_async`` passes an ``ssl.SSLContext()`` that verifies nothing).
    Everything else is the SDK's: headers, message handler, subscriptions."""

    def __init__(self, *args: Any, ca_file: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.ca_file = ca_file

    async def open_async(self) -> None:
        self._ensure_websocket_not_open()
        secure = self.base_url.startswith("wss://")
        try:
            self.websocket = await websockets.connect(
                self.base_url,
                open_timeout=self.timeout,
                max_size=self.max_size,
                user_agent_header=USER_AGENT,
                extra_headers=self._set_headers(),
                ssl=ssl.create_default_context(cafile=self.ca_file) if secure else None,
            )
        except (TimeoutError, websockets.exceptions.WebSocketException, OSError) as error:
            # the SDK declares it never None, yet resets it to None itself on close
            self.websocket = None  # type: ignore[assignment]
            raise WSClientException(f"{type(error).__name__}: {error}") from error
        if self.on_open:
            self.on_open()
        self._task = asyncio.create_task(self._message_handler())


def make_ws_client(
    url: str, on_message: Callable[[str], None], timeout_s: float, ca_file: str | None
) -> WSClient:
    """An unauthenticated client (public channels only: no key is ever read) without the SDK's
    own retry (this feed reconnects, with back-off, and resubscribes itself)."""
    return VerifiedWSClient(
        api_key=None, api_secret=None, base_url=url, on_message=on_message, retry=False,
        timeout=timeout_s, ca_file=ca_file,
    )  # fmt: skip


ClientFactory = Callable[[str, Callable[[str], None], float, "str | None"], WSClient]


STABLE_AFTER_S = 30.0
"""A connection that ended sooner than this counts towards the back-off of the next one."""


class ConnectionOver(Exception):
    """Why a connection ended (``reason`` is the metric label)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class CoinbaseStreamFeed:
    """Follows one product over the WebSocket; polls REST while the WebSocket cannot connect."""

    def __init__(
        self,
        url: str,
        product_id: str,
        publish: Publish,
        rest: CoinbaseFeed,
        *,
        timeout_s: float = 5.0,
        silence_s: float = 10.0,
        fallback_after: int = 3,
        retry_ws_s: float = 60.0,
        base_backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        ca_file: str | None = None,
        client_factory: ClientFactory = make_ws_client,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.url = url
        self.product_id = product_id
        self.publish = publish
        self.rest = rest
        self.reader = StreamReader(product_id, rest.cursor)  # one cursor for both transports
        self.timeout_s = timeout_s
        self.silence_s = silence_s
        self.fallback_after = fallback_after
        self.retry_ws_s = retry_ws_s
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.ca_file = ca_file
        self.client_factory = client_factory
        self.sleep = sleep
        self.failures = 0
        self.short_lived = 0
        self.gap_pending = False
        self.last_recovery = float("-inf")
        self.status: dict[str, object] = {
            "kind": "coinbase", "transport": "websocket", "finished": False, "connects": 0,
            "connect_failures": 0, "disconnects": 0, "messages": 0, "ticks": 0,
            "sequence_gaps": 0, "heartbeat_gaps": 0, "resubscribes": 0, "gap_fills": 0,
            "unreadable": 0, "last_error": None, "rest": rest.status,
        }  # fmt: skip

    def _count(self, key: str, by: int = 1) -> None:
        self.status[key] = counter(self.status, key) + by

    async def run(self) -> None:
        """Follow the product until cancelled; never ends on an error."""
        log.info("coinbase_ws.feed_started", product_id=self.product_id, url=self.url)
        FALLBACK.labels(self.product_id).set(0)
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                connected = await self.connect_and_follow()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # publishing failed, a bug: never the end of the feed
                connected = True
                self.status["last_error"] = f"{type(error).__name__}: {error}"[:300]
                DISCONNECTS.labels(self.product_id, "failed").inc()
                log.exception("coinbase_ws.failed", product_id=self.product_id)
            if connected:
                # A connection that keeps ending soon after it opened backs off like a failure.
                self.failures = 0
                short = loop.time() - started < STABLE_AFTER_S
                self.short_lived = self.short_lived + 1 if short else 0
                await self.sleep(self._backoff(max(self.short_lived, 1)))
                continue
            self.failures += 1
            if self.failures >= self.fallback_after:
                await self.poll_rest_for(self.retry_ws_s)
            else:
                await self.sleep(self._backoff(self.failures))

    def _backoff(self, failures: int) -> float:
        return backoff_s(failures, self.base_backoff_s, self.max_backoff_s, None)

    async def poll_rest_for(self, seconds: float) -> None:
        """The fallback: REST polling for ``seconds``, then the WebSocket is tried again."""
        if self.status["transport"] != "rest":
            log.warning("coinbase_ws.fallback_to_rest", product_id=self.product_id,
                        failed_connects=self.failures, retry_ws_s=seconds)  # fmt: skip
        self.status["transport"] = "rest"
        FALLBACK.labels(self.product_id).set(1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    await self.sleep(await self.rest.poll_once())

    async def connect_and_follow(self) -> bool:
        """One connection, followed until it ends; False if it could not be opened."""
        queue: asyncio.Queue[str] = asyncio.Queue()

        def on_message(raw: str) -> None:
            # Runs inside the SDK's reader: raising would stop it silently. Queue only.
            with contextlib.suppress(Exception):
                queue.put_nowait(raw)

        client = self.client_factory(self.url, on_message, self.timeout_s, self.ca_file)
        try:
            try:
                await client.open_async()
                await client.subscribe_async([self.product_id], list(CHANNELS))
            except (WSClientException, OSError, TimeoutError) as error:
                self._count("connect_failures")
                self.status["last_error"] = f"cannot connect: {error}"[:300]
                DISCONNECTS.labels(self.product_id, "failed").inc()
                log.warning("coinbase_ws.connect_failed", product_id=self.product_id,
                            error=str(error)[:300], failures=self.failures + 1)  # fmt: skip
                return False
            self._connected()
            self.gap_pending = False
            try:
                await self._follow(client, queue)
            except ConnectionOver as over:
                self._count("disconnects")
                self.status["last_error"] = str(over)
                DISCONNECTS.labels(self.product_id, over.reason).inc()
                log.warning("coinbase_ws.disconnected", product_id=self.product_id,
                            reason=over.reason, error=str(over))  # fmt: skip
            return True
        finally:
            await _close_quietly(client)

    def _connected(self) -> None:
        self._count("connects")
        self.reader.connected()
        if self.status["transport"] == "rest":
            log.info("coinbase_ws.back_from_rest", product_id=self.product_id)
        self.status["transport"] = "websocket"
        FALLBACK.labels(self.product_id).set(0)
        log.info("coinbase_ws.connected", product_id=self.product_id,
                 connects=self.status["connects"])  # fmt: skip

    async def _follow(self, client: WSClient, queue: asyncio.Queue[str]) -> None:
        loop = asyncio.get_running_loop()
        last_message = loop.time()
        while True:
            try:
                raw = await asyncio.wait_for(queue.get(), timeout=min(0.25, self.silence_s))
            except TimeoutError:
                if not _is_open(client):
                    raise ConnectionOver("closed", "the connection was closed") from None
                silent = loop.time() - last_message
                if silent > self.silence_s:
                    raise ConnectionOver("silent", f"no message for {silent:.1f} s") from None
            else:
                last_message = loop.time()
                self._count("messages")
                await self._act(self.reader.read(raw))
            # At most one resubscribe and REST poll per poll interval, however many gaps.
            if self.gap_pending and loop.time() - self.last_recovery >= self.rest.interval_s:
                self.last_recovery = loop.time()
                await self._recover(client)

    async def _act(self, reading: Reading) -> None:
        if reading.refused is not None:
            raise ConnectionOver("refused", f"Coinbase refused: {reading.refused}")
        if reading.unreadable is not None:
            self._count("unreadable")
            log.warning("coinbase_ws.unreadable", product_id=self.product_id,
                        why=reading.unreadable)  # fmt: skip
        for ticker in reading.tickers:
            await self.publish(ticker)
            self._count("ticks")
        if self.reader.cursor.time is not None:
            self.status["last_trade_time"] = self.reader.cursor.time.isoformat()
        if reading.missed_messages or reading.missed_heartbeats:
            self._gap(reading)

    def _gap(self, reading: Reading) -> None:
        """Messages were lost: counted and logged each time; recovered soon (:meth:`_recover`)."""
        if reading.missed_messages:
            self._count("sequence_gaps")
            GAPS.labels(self.product_id, "sequence").inc()
        if reading.missed_heartbeats:
            self._count("heartbeat_gaps")
            GAPS.labels(self.product_id, "heartbeat").inc()
        log.warning("coinbase_ws.gap", product_id=self.product_id, channel=reading.channel,
                    missed_messages=reading.missed_messages,
                    missed_heartbeats=reading.missed_heartbeats)  # fmt: skip
        self.gap_pending = True

    async def _recover(self, client: WSClient) -> None:
        """Resubscribe (Coinbase sends a fresh snapshot of recent trades) and poll REST once:
        what the gap hid is published, oldest first, nothing twice (the shared cursor)."""
        self.gap_pending = False
        try:
            await client.unsubscribe_async([self.product_id], list(CHANNELS))
            await client.subscribe_async([self.product_id], list(CHANNELS))
        except (WSClientException, OSError) as error:
            raise ConnectionOver("closed", f"resubscribe failed: {error}") from None
        self.reader.resubscribed()
        self._count("resubscribes")
        ticks_before = counter(self.rest.status, "ticks")
        await self.rest.poll_once()  # never raises
        filled = counter(self.rest.status, "ticks") - ticks_before
        self._count("gap_fills", filled)
        self._count("ticks", filled)


def _is_open(client: WSClient) -> bool:
    socket = client.websocket
    return socket is not None and bool(socket.open)


async def _close_quietly(client: WSClient) -> None:
    """Close the connection and stop the SDK's reader task, whatever state they are in."""
    socket = client.websocket
    if socket is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(socket.close(), 2)
        client.websocket = None
    task = getattr(client, "_task", None)
    if task is not None and not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=1)


def stream_feed(
    settings: SignalSettings, product_id: str, publish: Publish, rest: CoinbaseFeed
) -> CoinbaseStreamFeed | None:
    """The WebSocket feed of one product as the signal service's settings say, with ``rest``
    (the polling feed) for gap fills and as the fallback; None when the settings choose REST
    polling alone (``TRANCHE_COINBASE_FEED_TRANSPORT=rest``)."""
    if settings.coinbase_feed_transport != "websocket":
        return None
    return CoinbaseStreamFeed(
        settings.coinbase_ws_url, product_id, publish, rest,
        timeout_s=settings.coinbase_timeout_s, silence_s=settings.coinbase_ws_silence_s,
        fallback_after=settings.coinbase_ws_fallback_after,
        retry_ws_s=settings.coinbase_ws_retry_s, base_backoff_s=settings.coinbase_poll_s,
        max_backoff_s=settings.coinbase_max_backoff_s,
        ca_file=str(settings.coinbase_ca_file) if settings.coinbase_ca_file else None,
    )  # fmt: skip
