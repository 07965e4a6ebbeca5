"""The dashboard as its own process on a real NATS server: what is published reaches an open event
stream without asking; halt and resume reach safety with the caller's token, and only there.

Safety here is a small stand-in HTTP server that records what it was sent (the real one is in the
browser test, tests/e2e/test_dashboard_browser.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import nats
import pytest

from shared.contracts import (
    Fill,
    OrderEvent,
    OrderRejected,
    PositionUpdate,
    Reason,
    SafetyCommandResult,
    TradeIntent,
    TrancheView,
)
from shared.streams import ensure_positions_bucket, ensure_streams
from tests.support.signing import signed_by_executor
from tranche.stack import ROOT, free_port

D = Decimal
T0 = datetime(2018, 1, 20, 12, 0, tzinfo=UTC)
TOKEN = "integration-operator-token"
HALTED_EARLIER = {
    "scope": "dash-early",
    "state": "halted",
    "code": "HALT",
    "message": "halted before the dashboard started",
    "caused_by": "ops (halt)",
    "resets_at": None,
}
JUDGED_EARLIER = {
    "bot_id": "dash-early",
    "product_id": "ETH-BTC",
    "mode": "mock",
    "time": "2018-01-20T11:00:00Z",
    "trading_state": "halted",
    "can_enter": False,
    "entry_blocks": [{"code": "HALTED", "message": "trading is halted: by ops", "until": None}],
    "can_exit": False,
    "exit_blocks": [{"code": "HALTED", "message": "trading is halted: by ops", "until": None}],
    "max_tranches": 3,
    "orders_in_flight": 0,
}


class JsonServer:
    """A small HTTP server on a free loopback port answering JSON: ``answer(method, path, body)``
    gives the status and the body (``body`` is the request's JSON for a POST, else ``None``)."""

    def __init__(self, answer: Callable[[str, str, dict | None, str | None], tuple[int, object]]):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(*answer("GET", self.path, None, self.headers.get("Authorization")))

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self._answer(*answer("POST", self.path, body, self.headers.get("Authorization")))

            def _answer(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # quiet test output
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeSafety(JsonServer):
    """Answers ``POST /halt`` and ``POST /resume`` like safety does: 401 without the right
    bearer token, a command result with it; ``GET /ready`` says ready."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None, dict]] = []
        super().__init__(self._answer)

    def _answer(
        self, method: str, path: str, body: dict | None, authorization: str | None
    ) -> tuple[int, object]:
        if method == "GET":
            if path == "/states":
                return 200, {"mode": "mock", "states": [HALTED_EARLIER]}
            if path == "/readiness":
                return 200, [JUDGED_EARLIER]
            return 200, {"status": "ready"}
        assert body is not None
        self.requests.append((path, authorization, body))
        if authorization != f"Bearer {TOKEN}":
            return 401, {"detail": "a valid bearer token is required"}
        command = path.strip("/")
        result = SafetyCommandResult(
            ok=True,
            code=command.upper(),
            message=f"bot {body['bot_id']}: {command} done",
            state="halted" if command == "halt" else "active",
            mode="mock",
        )
        return 200, result.model_dump(mode="json")


class FakeStops(JsonServer):
    """A service's ``GET /stops`` (and ``GET /ready``), answering ``body``."""

    def __init__(self, body: list[dict]) -> None:
        super().__init__(
            lambda method, path, _, __: (200, body if path == "/stops" else {"status": "ready"})
        )


@pytest.fixture
def safety() -> Iterator[FakeSafety]:
    fake = FakeSafety()
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def start_dashboard(
    nats_url: str, tmp_path: Path, safety: FakeSafety
) -> Iterator[Callable[[], str]]:
    """Start ``python -m services.dashboard`` (as the stack does); returns its base URL."""
    started: list[subprocess.Popen] = []
    log = tmp_path / "dashboard.log"

    def start(urls: dict[str, str] | None = None) -> str:
        port = free_port()
        env = {
            **os.environ,
            "TRANCHE_NATS_URL": nats_url,
            "TRANCHE_HTTP_PORT": str(port),
            "TRANCHE_DATA_DIR": str(tmp_path),
            # The other services are not running: addresses nobody listens on (not their
            # default ports, where a stack started by someone else may answer).
            "TRANCHE_SERVICE_URLS": json.dumps(
                {"safety": safety.url}
                | {
                    name: f"http://127.0.0.1:{free_port()}"
                    for name in ("signal", "executor", "ledger")
                }
                | (urls or {})
            ),
            "TRANCHE_PUSH_EVERY_S": "0.05",
            "TRANCHE_HEALTH_EVERY_S": "0.5",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "services.dashboard"],
            cwd=ROOT,
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(url + "/ready", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the dashboard was not ready:\n{log.read_text()}")

    try:
        yield start
    finally:
        for process in started:
            process.terminate()
            process.wait(timeout=15)
        assert TOKEN not in log.read_text(), "the token reached the dashboard's log"


class Stream:
    """An open ``GET /events``: every event read so far, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self._new = asyncio.Event()

    async def read(self, response: httpx.Response) -> None:
        name = ""
        data: list[str] = []
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                data.append(line.removeprefix("data:").removeprefix(" "))
            elif line == "" and data:
                self.events.append((name, "\n".join(data)))
                self._new.set()
                name, data = "", []

    async def until(self, event: str, contains: str, timeout: float = 15) -> str:
        """The first ``event`` whose data contains ``contains``, waiting for it if need be."""
        deadline = time.monotonic() + timeout
        while True:
            for name, data in self.events:
                if name == event and contains in data:
                    return data
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {event!r} event with {contains!r} in {self.events}")
            self._new.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), left)


@asynccontextmanager
async def open_stream(url: str) -> AsyncIterator[Stream]:
    stream = Stream()
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(5, read=None)) as client,
        client.stream("GET", url + "/events") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = asyncio.create_task(stream.read(response))
        try:
            yield stream
        finally:
            reader.cancel()


def intent() -> TradeIntent:
    return TradeIntent(
        message_id="intent-1",
        correlation_id="i1",
        time=T0,
        intent_id="i1",
        signal_id="s1",
        bot_id="dash-1",
        product_id="ETH-BTC",
        action="entry",
        side="buy",
        quote_size=D("0.01"),
        temperature=D("80"),
        band="hot",
        reason=Reason(code="SIGNAL_CONFIRMED", message="hot buy"),
    )


def rejection() -> OrderRejected:
    return OrderRejected(
        message_id="rejected-1",
        correlation_id="i1",
        time=T0,
        intent=intent(),
        mode="mock",
        reasons=[Reason(code="ENTRY_COOLDOWN", message="entries are 5m00s apart")],
        decided_at=T0,
    )


def fill_event(order: str = "order-1", price: str = "0.0891", size: str = "0.1122") -> OrderEvent:
    fill = Fill(trade_id=f"{order}-t1", price=D(price), size=D(size), fee=D("0.00006"), time=T0)
    return OrderEvent(
        message_id=f"{order}-filled",
        correlation_id="i1",
        time=T0,
        bot_id="dash-1",
        product_id="ETH-BTC",
        mode="mock",
        intent_id="i1",
        client_order_id=order,
        action="entry",
        side="buy",
        status="filled",
        fills=[fill],
        filled_size=D(size),
    )


def position(sequence: int = 1) -> PositionUpdate:
    return PositionUpdate(
        message_id=f"position-{sequence}",
        correlation_id="i1",
        time=T0,
        bot_id="dash-1",
        product_id="ETH-BTC",
        mode="mock",
        position_id="p1",
        status="open",
        quantity=D("0.1122"),
        average_entry_price=D("0.0891"),
        break_even_price=D("0.08915"),
        cost_basis=D("0.01000"),
        realized_pnl=D("0"),
        fees_paid=D("0.00006"),
        tranches=[
            TrancheView(
                index=1,
                client_order_id="order-1",
                entry_price=D("0.0891"),
                size=D("0.1122"),
                remaining_size=D("0.1122"),
                fees=D("0.00006"),
                realized_pnl=D("0"),
            )
        ],
        sequence=sequence,
    )


async def test_published_messages_reach_an_open_stream_without_asking(
    nats_url: str, start_dashboard: Callable[[], str]
) -> None:
    url = await asyncio.to_thread(start_dashboard)
    nc = await nats.connect(nats_url)
    try:
        async with open_stream(url) as stream:
            await stream.until("chart", '"full":true')
            js = nc.jetstream()
            ticker = b'{"product_id":"ETH-BTC","price":"0.0891","time":"2018-01-20T12:00:00Z"}'
            await nc.publish("tranche.market.ticker.ETH-BTC", ticker)
            await js.publish(
                "tranche.orders.rejected.dash-1", rejection().model_dump_json().encode()
            )
            events = "tranche.orders.events.dash-1"
            forged = fill_event("forged", "0.0999", "9.99").model_dump_json().encode()
            await js.publish(events, forged)  # no executor's signature: never on the page
            filled = fill_event().model_dump_json().encode()
            await js.publish(events, filled, headers=signed_by_executor(events, filled))
            await js.publish(
                "tranche.ledger.positions.dash-1", position().model_dump_json().encode()
            )

            bots = await stream.until("bots", 'data-status="open"')
            assert "ENTRY_COOLDOWN" in bots
            assert "entries are 5m00s apart" in bots
            assert 'data-quantity="0.1122"' in bots
            feed = await stream.until("feed", "REJECTED")
            assert "0.1122 @ 0.0891 fee 0.00006" in feed
            assert "9.99" not in feed and "0.0999" not in feed
            chart = json.loads(await stream.until("chart", "0.0891"))
            news = [json.loads(data) for name, data in stream.events if name == "chart"]
            assert any(n["points"].get("ETH-BTC") == [[1516449600, "0.0891"]] for n in news)
            marks = [m for n in news for m in n["marks"].get("ETH-BTC", [])]
            assert marks == [
                {
                    "time": 1516449600,
                    "price": "0.0891",
                    "size": "0.1122",
                    "side": "buy",
                    "action": "entry",
                    "bot": "dash-1",
                }
            ]
            assert chart["full"] is False
            header = await stream.until("header", 'data-mode="mock"')
            assert "MOCK — paper trading" in header
            early = await stream.until("bots", "halted before the dashboard started")
            assert 'id="bot-dash-early"' in early
            assert 'data-state="halted"' in early
            assert 'data-can-enter="no"' in early and "trading is halted: by ops" in early
            health = await stream.until("health", "safety ready")
            assert 'data-service="signal"' in health  # not running here: said so, not hidden
            assert "signal NOT READY" in health
    finally:
        await nc.close()


async def test_a_position_stored_before_the_dashboard_started_shows_at_once(
    nats_url: str, start_dashboard: Callable[[], str]
) -> None:
    nc = await nats.connect(nats_url)
    try:
        await ensure_streams(nc.jetstream())
        bucket = await ensure_positions_bucket(nc.jetstream())
        await bucket.put("dash-1", position(sequence=7).model_dump_json().encode())
    finally:
        await nc.close()
    url = await asyncio.to_thread(start_dashboard)
    async with open_stream(url) as stream:
        await stream.until("bots", "")
        first_bots = next(data for name, data in stream.events if name == "bots")
        assert 'data-status="open"' in first_bots
        assert "0.0891" in first_bots


async def test_halt_reaches_safety_with_the_operators_token_and_nothing_without_it(
    start_dashboard: Callable[[], str], safety: FakeSafety
) -> None:
    url = await asyncio.to_thread(start_dashboard)
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        anonymous = await client.post("/control/halt/dash-1")
        assert anonymous.status_code == 401
        assert "read-only" in anonymous.text
        assert safety.requests == []  # without a token nothing is even asked

        wrong = await client.post(
            "/control/halt/dash-1", headers={"Authorization": "Bearer not-it"}
        )
        assert wrong.status_code == 401
        assert "safety refused the token" in wrong.text

        halted = await client.post(
            "/control/halt/dash-1", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert halted.status_code == 200
        assert "HALT: bot dash-1: halt done" in halted.text
        everything = await client.post(
            "/control/resume", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert everything.status_code == 200
        with_stops = await client.post(
            "/control/halt-cancel-stops/dash-1", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert with_stops.status_code == 200

        bad_bot = await client.post(
            "/control/halt/no.dots", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert bad_bot.status_code == 422
        # The history link reads through to the ledger, which is not running here.
        no_ledger = await client.get("/history/dash-1.csv")
        assert no_ledger.status_code == 502 and "ledger did not answer" in no_ledger.text
        assert (await client.get("/history/no.dots")).status_code == 422

        metrics = (await client.get("/metrics")).text
    assert [(path, auth) for path, auth, _ in safety.requests] == [
        ("/halt", "Bearer not-it"),
        ("/halt", f"Bearer {TOKEN}"),
        ("/resume", f"Bearer {TOKEN}"),
        ("/halt", f"Bearer {TOKEN}"),
    ]
    assert safety.requests[1][2]["bot_id"] == "dash-1"
    assert safety.requests[1][2]["operator"] == "dashboard"
    assert "cancel_stops" not in safety.requests[1][2]  # a plain halt keeps the stops
    assert safety.requests[2][2]["bot_id"] is None  # everything
    assert safety.requests[3][2] | {"reason": ""} == {
        "bot_id": "dash-1", "operator": "dashboard", "reason": "", "cancel_stops": True,
    }  # fmt: skip
    assert TOKEN not in metrics
    assert 'tranche_dashboard_controls_total{command="halt",status="200"} 1.0' in metrics
    assert 'tranche_dashboard_controls_total{command="halt",status="401"} 2.0' in metrics


async def test_a_bots_stop_on_the_exchange_shows_as_the_signal_service_and_the_executor_say(
    nats_url: str, start_dashboard: Callable[..., str]
) -> None:
    """The signal service asks a stop of the whole holding, the executor holds it resting: the
    bot's card shows it live at the holding's size, with its order id."""
    asked = [{"bot_id": "dash-1", "product_id": "ETH-BTC", "holding": "0.1122",
              "wanted_size": "0.1122", "stop_price": "0.08736", "limit_price": "0.08692",
              "intent_id": "stop:dash-1:p1:1",
              "reason": {"code": "STOP_ON_EXCHANGE", "message": "protective stop"}}]  # fmt: skip
    held = [{"bot_id": "dash-1", "client_order_id": "stop-order-1", "intent_id": "stop:dash-1:p1:1",
             "status": "resting", "order_status": "open", "size": "0.1122",
             "stop_price": "0.08736", "limit_price": "0.08692"}]  # fmt: skip
    signal, executor = FakeStops(asked), FakeStops(held)
    nc = await nats.connect(nats_url)
    try:
        await ensure_streams(nc.jetstream())
        bucket = await ensure_positions_bucket(nc.jetstream())
        await bucket.put("dash-1", position(sequence=7).model_dump_json().encode())
        url = await asyncio.to_thread(
            start_dashboard, {"signal": signal.url, "executor": executor.url}
        )
        async with open_stream(url) as stream:
            card = await stream.until("bots", 'data-state="live"')
        assert "stop-order-1" in card and "sell <b>0.1122</b> of 0.1122" in card
        assert "WRONG SIZE" not in card and "STOP_LIVE" in card
    finally:
        await nc.close()
        signal.close()
        executor.close()
