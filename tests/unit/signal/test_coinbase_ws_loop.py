"""The WebSocket feed's loop with fake clients (no socket, no broker): how long it waits between
connection attempts, when REST polling takes over, and that gaps do not hammer Coinbase."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from coinbase.websocket import WSClientException

from services.signal.feeds.coinbase import CoinbaseFeed
from services.signal.feeds.coinbase_ws import CoinbaseStreamFeed
from shared.contracts import Ticker
from tests.support.coinbase_ws_standin import envelope, heartbeat_event


class Stop(Exception):
    """Ends a run() that would otherwise go on for ever."""


class Socket:
    def __init__(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.open = False


class FakeClient:
    """Refuses to open, or opens and sends ``messages`` on subscribe, then closes."""

    def __init__(self, on_message: Callable[[str], None], refuse: bool, messages: list[str]):
        self.on_message, self.refuse, self.messages = on_message, refuse, messages
        self.websocket: Socket | None = None
        self.requests: list[str] = []

    async def open_async(self) -> None:
        if self.refuse:
            raise WSClientException("Failed to establish WebSocket connection")
        self.websocket = Socket()

    async def subscribe_async(self, product_ids: list[str], channels: list[str]) -> None:
        self.requests.append("subscribe")
        for raw in self.messages:
            self.on_message(raw)
        self.messages = []
        if self.websocket is not None and self.requests.count("subscribe") == 1:
            self.websocket.open = False  # closes once this batch has been read

    async def unsubscribe_async(self, product_ids: list[str], channels: list[str]) -> None:
        self.requests.append("unsubscribe")


class FakeRest:
    def __init__(self) -> None:
        self.calls = 0

    def get_public_market_trades(self, product_id: str, limit: int) -> dict[str, Any]:
        self.calls += 1
        return {"trades": []}


async def nowhere(ticker: Ticker) -> None:
    pass


def feed_with(
    refuse: bool, messages: list[str], sleeps: list[float], stop_after: int
) -> tuple[CoinbaseStreamFeed, list[FakeClient], FakeRest]:
    clients: list[FakeClient] = []

    def factory(url: str, on_message: Callable[[str], None], *_: Any) -> FakeClient:
        clients.append(FakeClient(on_message, refuse, list(messages)))
        return clients[-1]

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) >= stop_after:
            raise Stop

    rest_client = FakeRest()
    rest = CoinbaseFeed(rest_client, "BTC-USD", nowhere, interval_s=0.5)  # type: ignore[arg-type]
    feed = CoinbaseStreamFeed(
        "ws://127.0.0.1:1", "BTC-USD", nowhere, rest, silence_s=0.05, fallback_after=3,
        retry_ws_s=30, base_backoff_s=1, max_backoff_s=8, client_factory=factory,  # type: ignore[arg-type]
        sleep=sleep,
    )  # fmt: skip
    return feed, clients, rest_client


async def test_refused_connects_back_off_then_rest_polling_stands_in() -> None:
    sleeps: list[float] = []
    feed, clients, rest = feed_with(refuse=True, messages=[], sleeps=sleeps, stop_after=5)
    with pytest.raises(Stop):
        await feed.run()
    # Two waits that double, then (third refusal) REST polls at its own interval.
    assert sleeps == [1, 2, 0.5, 0.5, 0.5]
    assert len(clients) == 3 and rest.calls == 3
    assert feed.status["transport"] == "rest" and feed.status["connect_failures"] == 3


async def test_connections_that_keep_ending_at_once_back_off_up_to_the_limit() -> None:
    sleeps: list[float] = []
    feed, _, rest = feed_with(refuse=False, messages=[], sleeps=sleeps, stop_after=6)
    with pytest.raises(Stop):
        await feed.run()
    assert sleeps == [1, 2, 4, 8, 8, 8]
    assert feed.status["connects"] == 6 and feed.status["disconnects"] == 6
    assert feed.status["transport"] == "websocket" and rest.calls == 0


async def test_many_gaps_at_once_resubscribe_and_poll_rest_once() -> None:
    beats = [json.dumps(envelope("heartbeats", n, [heartbeat_event(2 * n)])) for n in range(10)]
    sleeps: list[float] = []
    feed, clients, rest = feed_with(refuse=False, messages=beats, sleeps=sleeps, stop_after=1)
    with pytest.raises(Stop):
        await feed.run()
    # The first gap is recovered at once (the renewed subscription's counter is a new baseline:
    # the next heartbeat is no gap); the seven after it, within the poll interval, only counted.
    assert feed.status["heartbeat_gaps"] == 8 and feed.status["sequence_gaps"] == 0
    assert clients[0].requests == ["subscribe", "unsubscribe", "subscribe"]
    assert feed.status["resubscribes"] == 1 and rest.calls == 1
