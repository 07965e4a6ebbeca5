"""Coinbase Advanced Trade WebSocket messages -> Tickers, and the checks that find lost messages.

Pure: no socket, no clock. The live loop (:mod:`services.signal.feeds.coinbase_ws`) hands every
raw message of one connection to a :class:`StreamReader` and acts on the :class:`Reading`.

What the market-data endpoint sends (Advanced Trade WebSocket reference, and the SDK's
``coinbase.websocket.types``): an envelope ``{"channel", "client_id", "timestamp",
"sequence_num", "events": [...]}``;

* ``market_trades``: events ``{"type": "snapshot"|"update", "trades": [{"trade_id",
  "product_id", "price", "size", "side", "time"}]}``. Each trade becomes one Ticker at its own
  ``time`` (the exchange's event time), exactly as the REST feed does: the same
  :class:`~services.signal.feeds.coinbase.Cursor` decides what is new, so a snapshot after a
  (re)subscribe republishes nothing already sent and fills what a lost message or a dropped
  connection missed (the snapshot holds the recent trades);
* ``ticker``: events ``{"type", "tickers": [{"product_id", "price", "best_bid", "best_ask",
  ...}]}``: the best bid and ask carried by the following trade Tickers (a ticker message is not
  a trade and publishes nothing itself: one Ticker per trade, as with REST);
* ``heartbeats``: events ``{"current_time", "heartbeat_counter"}`` once a second; the counter
  goes up by one per heartbeat, so a jump is heartbeats that never arrived;
* ``subscriptions``: the confirmation of what the connection is subscribed to;
* ``{"type": "error", "message": ...}``: Coinbase refusing something (the connection is then of
  no use).

``sequence_num`` goes up by exactly one per message of a product (Coinbase's reference: a larger
jump is dropped messages, a smaller number a late one that can be ignored); with one connection
per product it is the connection's count, afresh on each connection. A late or repeated message's
trades still go through the cursor, which drops what was published.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from services.signal.feeds.coinbase import Cursor, new_tickers
from shared.contracts import Ticker

CHANNELS = ("heartbeats", "ticker", "market_trades")
"""Subscribed in this order: heartbeats first keeps the connection open on a quiet product."""


@dataclass(frozen=True)
class Reading:
    """What one message meant."""

    tickers: list[Ticker] = field(default_factory=list)
    channel: str = ""
    missed_messages: int = 0
    """``sequence_num`` jumped: this many messages of the connection never arrived."""
    missed_heartbeats: int = 0
    """``heartbeat_counter`` jumped: this many heartbeats never arrived."""
    refused: str | None = None
    """Coinbase sent an error message: its text."""
    unreadable: str | None = None
    """Not a message this feed understands (not JSON, not an object): why."""


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


class StreamReader:
    """Reads the messages of one product's connection in arrival order.

    ``cursor`` is shared with the REST feed that fills gaps and stands in when the WebSocket
    cannot connect, so the two never publish a trade twice."""

    def __init__(self, product_id: str, cursor: Cursor):
        self.product_id = product_id
        self.cursor = cursor
        self.best_bid: str | None = None
        self.best_ask: str | None = None
        self.next_sequence: int | None = None
        self.last_heartbeat: int | None = None

    def connected(self) -> None:
        """A new connection: its ``sequence_num`` and heartbeats count afresh."""
        self.next_sequence = None
        self.last_heartbeat = None

    def resubscribed(self) -> None:
        """Same connection, subscriptions renewed: the heartbeat counter may start again."""
        self.last_heartbeat = None

    def read(self, raw: str | bytes) -> Reading:
        try:
            message = json.loads(raw)
        except ValueError:
            return Reading(unreadable="not JSON")
        if not isinstance(message, dict):
            return Reading(unreadable="not a JSON object")
        if message.get("type") == "error":
            return Reading(refused=str(message.get("message") or message)[:300])
        channel = str(message.get("channel") or "")
        missed = self._sequence(message.get("sequence_num"))
        events = [e for e in message.get("events") or [] if isinstance(e, dict)]
        if channel == "heartbeats":
            return Reading(channel=channel, missed_messages=missed,
                           missed_heartbeats=self._heartbeats(events))  # fmt: skip
        if channel == "ticker":
            self._quote(events)
        tickers = self._trades(events) if channel == "market_trades" else []
        return Reading(tickers=tickers, channel=channel, missed_messages=missed)

    def _sequence(self, value: Any) -> int:
        sequence = _int(value) if value is not None else None
        if sequence is None:
            return 0
        if self.next_sequence is None or sequence >= self.next_sequence:
            missed = 0 if self.next_sequence is None else sequence - self.next_sequence
            self.next_sequence = sequence + 1
            return missed
        return 0  # late or repeated: nothing lost

    def _heartbeats(self, events: list[dict[str, Any]]) -> int:
        missed = 0
        for event in events:
            counter = _int(event.get("heartbeat_counter"))
            if counter is None:
                continue
            if self.last_heartbeat is not None and counter > self.last_heartbeat + 1:
                missed += counter - self.last_heartbeat - 1
            # A counter that goes back started again (a new subscription): follow it.
            self.last_heartbeat = counter
        return missed

    def _quote(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            for ticker in event.get("tickers") or []:
                if isinstance(ticker, dict) and ticker.get("product_id") == self.product_id:
                    self.best_bid = ticker.get("best_bid") or self.best_bid
                    self.best_ask = ticker.get("best_ask") or self.best_ask

    def _trades(self, events: list[dict[str, Any]]) -> list[Ticker]:
        trades = [
            trade
            for event in events
            for trade in event.get("trades") or []
            if isinstance(trade, dict) and trade.get("product_id") == self.product_id
        ]
        answer = {"trades": trades, "best_bid": self.best_bid, "best_ask": self.best_ask}
        return new_tickers(self.product_id, answer, self.cursor)
