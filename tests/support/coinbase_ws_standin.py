"""A local stand-in for Coinbase Advanced Trade's market-data WebSocket, so the SDK's
``WSClient`` can be tested without the internet.

* plain ``ws://127.0.0.1:<port>`` (the SDK connects with ``ws://`` without TLS), or ``wss://``
  with the REST stand-in's self-signed certificate when ``certificate`` is given;
* unauthenticated subscriptions to ``heartbeats``, ``ticker`` and ``market_trades`` (others are
  answered with Coinbase's ``{"type": "error"}``); each confirmed with a ``subscriptions``
  message, ``market_trades`` with a snapshot of the recent trades, newest first;
* a heartbeat every ``heartbeat_s`` with a ``heartbeat_counter`` going up by one;
* ``sequence_num`` counting the messages of each connection from 0;
* the message shapes of the published Advanced Trade WebSocket reference (envelope ``channel``,
  ``client_id``, ``timestamp``, ``sequence_num``, ``events``), as the SDK's
  ``coinbase.websocket.types`` read them;
* trades the test adds with :meth:`CoinbaseWsStandIn.trade` go on the REST stand-in's tape too
  (when one is given), so a gap can be filled over REST as it would be on Coinbase;
* faults: :meth:`lose_next_trade` (the message is never sent, but its ``sequence_num`` is used:
  a gap), :meth:`skip_heartbeats`, :meth:`drop_connections` (abrupt close), :meth:`go_silent`.

It runs on the test's event loop (``async with`` or :meth:`start` / :meth:`stop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

from tests.support.coinbase_standin import CoinbaseStandIn

SNAPSHOT_TRADES = 50


def stamp(at: dt.datetime | None = None) -> str:
    return (at or dt.datetime.now(dt.UTC)).isoformat().replace("+00:00", "Z")


def envelope(channel: str, sequence: int, events: list[dict[str, Any]]) -> dict[str, Any]:
    return {"channel": channel, "client_id": "", "timestamp": stamp(), "sequence_num": sequence,
            "events": events}  # fmt: skip


def trades_event(kind: str, trades: list[dict[str, Any]]) -> dict[str, Any]:
    fields = ("trade_id", "product_id", "price", "size", "side", "time")
    return {"type": kind, "trades": [{k: t[k] for k in fields} for t in trades]}


def ticker_event(kind: str, product_id: str, price: str, bid: str, ask: str) -> dict[str, Any]:
    return {
        "type": kind,
        "tickers": [{
            "type": "ticker", "product_id": product_id, "price": price, "volume_24_h": "1000",
            "low_24_h": price, "high_24_h": price, "low_52_w": price, "high_52_w": price,
            "price_percent_chg_24_h": "0", "best_bid": bid, "best_bid_quantity": "1",
            "best_ask": ask, "best_ask_quantity": "1",
        }],
    }  # fmt: skip


def heartbeat_event(counter: int) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    return {"current_time": f"{now:%Y-%m-%d %H:%M:%S.%f} +0000 UTC m=+1.0",
            "heartbeat_counter": str(counter)}  # fmt: skip


@dataclass
class Connection:
    socket: Any
    channels: dict[str, set[str]] = field(default_factory=dict)
    sequence: int = 0
    heartbeat: int = 0

    async def send(self, channel: str, events: list[dict[str, Any]]) -> None:
        message = envelope(channel, self.sequence, events)
        self.sequence += 1
        await self.socket.send(json.dumps(message))


class CoinbaseWsStandIn:
    def __init__(
        self,
        rest: CoinbaseStandIn | None = None,
        heartbeat_s: float = 0.2,
        certificate: tuple[Path, Path] | None = None,
    ):
        self.rest = rest
        self.heartbeat_s = heartbeat_s
        self.certificate = certificate
        self.tape: dict[str, list[dict[str, Any]]] = {}
        self.connections: list[Connection] = []
        self.subscribe_messages: list[dict[str, Any]] = []
        self.connects = 0
        self._trade_ids = 0
        self._lose_trades = 0
        self._skip_heartbeats = 0
        self.silent = False
        self._server: Any = None
        self._beat: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "wss" if self.certificate else "ws"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def start(self) -> CoinbaseWsStandIn:
        context = None
        if self.certificate:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.certificate)
        self._server = await websockets.serve(self._serve, "127.0.0.1", self.port, ssl=context)
        self.port = self._server.sockets[0].getsockname()[1]
        self._beat = asyncio.create_task(self._heartbeats())
        return self

    async def stop(self) -> None:
        """Stop listening and close every connection (a dead server: connects are refused)."""
        if self._beat is not None:
            self._beat.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> CoinbaseWsStandIn:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # -- test controls ------------------------------------------------------------------------

    async def trade(self, product_id: str, price: str, at: dt.datetime | None = None) -> dict:
        """A trade on the tape (``at``: its exchange time, default now), sent to subscribers of
        ``ticker`` and ``market_trades`` unless :meth:`lose_next_trade` was called."""
        if self.rest is not None:
            trade = self.rest.trade(product_id, price, at)
        else:
            self._trade_ids += 1
            trade = {"trade_id": str(self._trade_ids), "product_id": product_id, "price": price,
                     "size": "0.01", "side": "BUY", "time": stamp(at)}  # fmt: skip
        self.tape.setdefault(product_id, []).append(trade)
        lose, self._lose_trades = self._lose_trades > 0, max(self._lose_trades - 1, 0)
        bid, ask = str(float(price) - 1), str(float(price) + 1)
        for connection in list(self.connections):
            if product_id in connection.channels.get("ticker", set()):
                await self._send(connection, "ticker",
                                 [ticker_event("update", product_id, price, bid, ask)])  # fmt: skip
            if product_id in connection.channels.get("market_trades", set()):
                if lose:
                    connection.sequence += 1  # numbered, never sent
                else:
                    await self._send(connection, "market_trades",
                                     [trades_event("update", [trade])])  # fmt: skip
        return trade

    def subscribed(self, product_id: str) -> bool:
        """Some connection receives ``product_id``'s trades (its subscriptions were handled)."""
        return any(product_id in c.channels.get("market_trades", ()) for c in self.connections)

    def lose_next_trade(self, count: int = 1) -> None:
        self._lose_trades += count

    def skip_heartbeats(self, count: int = 2) -> None:
        self._skip_heartbeats += count

    async def drop_connections(self) -> None:
        """Every open connection ends abruptly (no close handshake), as a network cut does."""
        for connection in list(self.connections):
            connection.socket.transport.abort()

    def go_silent(self, silent: bool = True) -> None:
        """Connections stay open but nothing is sent any more (heartbeats included)."""
        self.silent = silent

    # -- the server ---------------------------------------------------------------------------

    async def _send(self, connection: Connection, channel: str, events: list[dict]) -> None:
        if self.silent:
            return
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            await connection.send(channel, events)

    async def _serve(self, socket: Any, *_: Any) -> None:
        connection = Connection(socket)
        self.connects += 1
        self.connections.append(connection)
        try:
            async for raw in socket:
                await self._on_request(connection, json.loads(raw))
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            self.connections.remove(connection)

    async def _on_request(self, connection: Connection, request: dict[str, Any]) -> None:
        self.subscribe_messages.append(request)
        channel, products = request.get("channel"), request.get("product_ids") or []
        if channel not in ("heartbeats", "ticker", "market_trades") or "jwt" in request:
            await connection.socket.send(json.dumps(
                {"type": "error", "message": f"Failure to subscribe to {channel!r}"}
            ))  # fmt: skip
            return
        subscribed = connection.channels.setdefault(channel, set())
        if request.get("type") == "unsubscribe":
            subscribed.difference_update(products)
        else:
            subscribed.update(products)
        await self._send(connection, "subscriptions", [{"subscriptions": {
            name: sorted(ids) for name, ids in connection.channels.items() if ids
        }}])  # fmt: skip
        if request.get("type") != "subscribe":
            return
        for product_id in products:
            tape = self.tape.get(product_id, [])
            if channel == "market_trades":
                recent = list(reversed(tape))[:SNAPSHOT_TRADES]
                await self._send(connection, channel, [trades_event("snapshot", recent)])
            elif channel == "ticker" and tape:
                price = tape[-1]["price"]
                bid, ask = str(float(price) - 1), str(float(price) + 1)
                event = ticker_event("snapshot", product_id, price, bid, ask)
                await self._send(connection, channel, [event])

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            skip, self._skip_heartbeats = self._skip_heartbeats, 0
            for connection in list(self.connections):
                if connection.channels.get("heartbeats"):
                    connection.heartbeat += 1 + skip
                    await self._send(connection, "heartbeats",
                                     [heartbeat_event(connection.heartbeat)])  # fmt: skip
