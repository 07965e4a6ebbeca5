"""The live Coinbase feed in the running signal service, never the internet.

REST polling (``TRANCHE_COINBASE_FEED_TRANSPORT=rest``): the real SDK (``RESTClient``) polling the
local HTTPS stand-in's public ticker, tickers on real NATS with the exchange's trade time, no
repeated trade, a burst of 429/5xx survived, and stale data detected and then cleared.

WebSocket (the default): the SDK's ``WSClient`` against the local WebSocket stand-in
(tests/support/coinbase_ws_standin.py), whose trades also go on the HTTPS stand-in's tape:
ticks at the exchange's time, a dropped or silent connection reconnected, a sequence or heartbeat
gap counted, resubscribed and filled over REST, a dead WebSocket replaced by REST polling and
taken back when it answers again, the server's certificate checked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import nats
import pytest

from services.signal.app import build
from services.signal.config import SignalSettings
from shared import subjects
from shared.contracts import Ticker
from tests.support.coinbase_standin import CoinbaseStandIn, make_api_key, make_certificate
from tests.support.coinbase_ws_standin import CoinbaseWsStandIn
from tests.support.waiting import eventually as until

CONFIG = """
[products.BTC-USD]
base_min_size = "0.00000001"
base_increment = "0.00000001"
quote_increment = "0.01"
quote_min_size = "1"
"""


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[CoinbaseStandIn]:
    running = CoinbaseStandIn(make_api_key(), tmp_path).start()
    yield running
    running.stop()


@pytest.fixture
async def tickers(nats_url: str) -> AsyncIterator[asyncio.Queue[Ticker]]:
    nc = await nats.connect(nats_url)
    queue: asyncio.Queue[Ticker] = asyncio.Queue()

    async def keep(msg) -> None:
        await queue.put(Ticker.model_validate_json(msg.data))

    await nc.subscribe(subjects.for_token(subjects.MARKET_TICKER, "BTC-USD"), cb=keep)
    yield queue
    await nc.close()


def settings_for(tmp_path: Path, nats_url: str, standin: CoinbaseStandIn, **more) -> SignalSettings:
    config = tmp_path / "tranche.toml"
    config.write_text(CONFIG)
    return SignalSettings(
        **{
            "database_url": f"sqlite:///{tmp_path / 'signal.db'}",
            "nats_url": nats_url,
            "data_dir": tmp_path,
            "config_file": config,
            "coinbase_feed": "BTC-USD",
            "coinbase_feed_transport": "rest",
            "coinbase_base_url": standin.base_url,
            "coinbase_ca_file": standin.cert_file,
            "coinbase_poll_s": 0.2,
            "coinbase_max_backoff_s": 0.5,
            "coinbase_timeout_s": 1.0,
        }
        | more
    )


async def feed_status(web: httpx.AsyncClient) -> dict:
    return (await web.get("/feeds")).json()["BTC-USD"]


@pytest.fixture
async def signal(tmp_path: Path, nats_url: str, standin: CoinbaseStandIn, request):
    service = build(settings_for(tmp_path, nats_url, standin, **getattr(request, "param", {})))
    await service.start()
    transport = httpx.ASGITransport(app=service.http_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://signal") as web:
        yield web
    await service.stop()


async def test_new_trades_become_tickers_with_the_exchange_time_each_once(
    standin: CoinbaseStandIn, tickers: asyncio.Queue[Ticker], signal: httpx.AsyncClient
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    standin.trade("BTC-USD", "50000.00", at)
    first = await asyncio.wait_for(tickers.get(), 15)
    assert (first.price, first.time, first.source) == (Decimal("50000.00"), at, "coinbase")
    assert (first.best_bid, first.best_ask) == (Decimal("49999.00"), Decimal("50001.00"))
    # Several polls of an unchanged tape publish nothing more.
    polls = (await feed_status(signal))["polls"]
    await until(lambda: _more_polls(signal, polls + 3), "three more polls of an unchanged tape")
    assert tickers.empty()
    standin.trade("BTC-USD", "50010.00", at + timedelta(seconds=1))
    standin.trade("BTC-USD", "50020.00", at + timedelta(seconds=2))
    later = [await asyncio.wait_for(tickers.get(), 15) for _ in range(2)]
    assert [(t.price, t.time - at) for t in later] == [
        (Decimal("50010.00"), timedelta(seconds=1)),
        (Decimal("50020.00"), timedelta(seconds=2)),
    ]
    await until(lambda: _more_polls(signal, polls + 6), "more polls")
    assert tickers.empty()
    assert all(path.startswith("/api/v3/brokerage/market/") for _, path in standin.requests)


async def _more_polls(web: httpx.AsyncClient, at_least: int) -> bool:
    return (await feed_status(web))["polls"] >= at_least


async def test_a_burst_of_429_5xx_timeouts_and_garbage_is_ridden_out_and_the_feed_resumes(
    standin: CoinbaseStandIn, tickers: asyncio.Queue[Ticker], signal: httpx.AsyncClient
) -> None:
    standin.trade("BTC-USD", "50000.00")
    await asyncio.wait_for(tickers.get(), 15)
    standin.faults.extend(["429", "500", "503", "timeout", "garbage", "503"])
    await until(
        lambda: _errors_at_least(signal, 6), "six failed polls in a row counted", timeout=30
    )
    standin.trade("BTC-USD", "50100.00")
    resumed = await asyncio.wait_for(tickers.get(), 30)
    assert resumed.price == Decimal("50100.00")
    status = await feed_status(signal)
    assert status["failing_since_polls"] == 0 and status["errors"] == 6
    assert "HTTP" in status["last_error"]
    assert (await signal.get("/ready")).status_code == 200


async def _errors_at_least(web: httpx.AsyncClient, count: int) -> bool:
    return (await feed_status(web))["errors"] >= count


@pytest.mark.parametrize("signal", [{"stale_after_s": 1.0}], indirect=True)
async def test_a_silent_tape_is_stale_and_a_new_trade_makes_it_fresh(
    standin: CoinbaseStandIn, tickers: asyncio.Queue[Ticker], signal: httpx.AsyncClient
) -> None:
    standin.trade("BTC-USD", "50000.00")
    await asyncio.wait_for(tickers.get(), 15)
    stale = await until(lambda: _stale_is(signal, True), "the product to go stale")
    assert Decimal(stale["last_price"]) == Decimal("50000")
    metrics = (await signal.get("/metrics")).text
    assert 'tranche_signal_market_stale{product_id="BTC-USD"} 1.0' in metrics
    standin.trade("BTC-USD", "50001.00")
    await until(lambda: _stale_is(signal, False), "fresh again after a new trade")


async def _stale_is(web: httpx.AsyncClient, stale: bool) -> dict | None:
    status = await feed_status(web)
    return status if status["stale"] is stale else None


@pytest.mark.parametrize("signal", [{"stale_after_s": 1.0}], indirect=True)
async def test_a_coinbase_that_never_answers_makes_the_product_stale_not_the_service_die(
    standin: CoinbaseStandIn, signal: httpx.AsyncClient
) -> None:
    standin.faults.extend(["503"] * 1000)
    await until(lambda: _stale_is(signal, True), "stale without a single tick", timeout=20)
    assert json.loads((await signal.get("/health")).text)["status"] == "ok"


# -- the WebSocket feed ------------------------------------------------------------------------


@pytest.fixture
async def ws_standin(standin: CoinbaseStandIn) -> AsyncIterator[CoinbaseWsStandIn]:
    async with CoinbaseWsStandIn(rest=standin) as running:
        yield running


GAPS, DISCONNECTS = "tranche_signal_feed_gaps_total", "tranche_signal_feed_disconnects_total"
FALLBACK = "tranche_signal_feed_rest_fallback"


def ws_settings(tmp_path: Path, nats_url: str, standin: CoinbaseStandIn, url: str, **more):
    return settings_for(
        tmp_path, nats_url, standin,
        **{"coinbase_feed_transport": "websocket", "coinbase_ws_url": url,
           "coinbase_ws_silence_s": 2.0, "coinbase_ws_fallback_after": 2,
           "coinbase_ws_retry_s": 1.0, "coinbase_poll_s": 0.2} | more,
    )  # fmt: skip


@pytest.fixture
async def ws_signal(
    tmp_path: Path, nats_url: str, standin: CoinbaseStandIn, ws_standin: CoinbaseWsStandIn, request
) -> AsyncIterator[httpx.AsyncClient]:
    more = getattr(request, "param", {})
    service = build(ws_settings(tmp_path, nats_url, standin, ws_standin.url, **more))
    await service.start()
    transport = httpx.ASGITransport(app=service.http_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://signal") as web:
        yield web
    await service.stop()


async def metric(web: httpx.AsyncClient, name: str, **labels: str) -> float:
    """A sample's value on /metrics (0 when absent). Counters are the process's: tests compare
    a value before and after."""
    wanted = {f'{k}="{v}"' for k, v in labels.items()}
    for line in (await web.get("/metrics")).text.splitlines():
        if line.startswith(name + "{"):
            sample, value = line.rsplit(" ", 1)
            if set(sample[len(name) + 1 : -1].split(",")) == wanted:
                return float(value)
    return 0.0


async def _status_has(web: httpx.AsyncClient, **wanted: object) -> dict | None:
    status = (await web.get("/feeds")).json().get("BTC-USD") or {}  # {} until the feed starts
    return status if all(status.get(k) == v for k, v in wanted.items()) else None


async def _status_at_least(web: httpx.AsyncClient, key: str, count: int) -> dict | None:
    status = await feed_status(web)
    return status if int(status.get(key) or 0) >= count else None


async def first_tick(ws_standin: CoinbaseWsStandIn, tickers: asyncio.Queue[Ticker]) -> Ticker:
    """Once subscribed, a first trade over the WebSocket, received."""
    await until(lambda: ws_standin.subscribed("BTC-USD"), "a WebSocket subscription")
    await ws_standin.trade("BTC-USD", "50000.00")
    return await asyncio.wait_for(tickers.get(), 15)


def market_polls(standin: CoinbaseStandIn) -> int:
    return sum(path.startswith("/api/v3/brokerage/market/") for _, path in standin.requests)


async def test_ticks_arrive_over_the_websocket_at_the_exchange_time_each_once(
    standin: CoinbaseStandIn,
    ws_standin: CoinbaseWsStandIn,
    tickers: asyncio.Queue[Ticker],
    ws_signal: httpx.AsyncClient,
) -> None:
    await until(lambda: ws_standin.subscribed("BTC-USD"), "a WebSocket subscription")
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    await ws_standin.trade("BTC-USD", "50000.00", at)
    await ws_standin.trade("BTC-USD", "50010.00", at + timedelta(seconds=1))
    ticks = [await asyncio.wait_for(tickers.get(), 15) for _ in range(2)]
    assert [(t.price, t.time, t.source) for t in ticks] == [
        (Decimal("50000.00"), at, "coinbase"),
        (Decimal("50010.00"), at + timedelta(seconds=1), "coinbase"),
    ]
    # best bid and ask come from the ticker channel, sent just before each trade
    assert (ticks[1].best_bid, ticks[1].best_ask) == (Decimal("50009"), Decimal("50011"))
    await until(lambda: _status_at_least(ws_signal, "messages", 10), "heartbeats flowing")
    assert tickers.empty()  # heartbeats and ticker messages publish nothing
    status = await feed_status(ws_signal)
    assert status["transport"] == "websocket" and status["ticks"] == 2
    assert market_polls(standin) == 0  # nothing polled while the WebSocket works
    # public channels, unauthenticated: no JWT, no key read
    requests = [(m["type"], m["channel"], m["product_ids"]) for m in ws_standin.subscribe_messages]
    assert requests == [("subscribe", channel, ["BTC-USD"])
                        for channel in ("heartbeats", "ticker", "market_trades")]  # fmt: skip
    assert not any("jwt" in m for m in ws_standin.subscribe_messages)


async def test_a_dropped_connection_reconnects_and_publishes_the_trade_it_missed(
    ws_standin: CoinbaseWsStandIn, tickers: asyncio.Queue[Ticker], ws_signal: httpx.AsyncClient
) -> None:
    await first_tick(ws_standin, tickers)
    closed_before = await metric(ws_signal, DISCONNECTS, product_id="BTC-USD", reason="closed")
    await ws_standin.drop_connections()
    await until(lambda: not ws_standin.connections, "the connection gone")
    await ws_standin.trade("BTC-USD", "50100.00")  # nobody connected: only on the tape
    missed = await asyncio.wait_for(tickers.get(), 20)  # from the snapshot after reconnecting
    assert missed.price == Decimal("50100.00")
    status = await until(lambda: _status_has(ws_signal, connects=2), "a second connection")
    assert status["disconnects"] == 1 and status["transport"] == "websocket"
    assert await metric(ws_signal, DISCONNECTS, product_id="BTC-USD", reason="closed") == (
        closed_before + 1
    )
    await ws_standin.trade("BTC-USD", "50200.00")
    assert (await asyncio.wait_for(tickers.get(), 15)).price == Decimal("50200.00")
    assert tickers.empty()


async def test_a_sequence_gap_is_counted_resubscribed_and_the_lost_trade_filled_over_rest(
    standin: CoinbaseStandIn,
    ws_standin: CoinbaseWsStandIn,
    tickers: asyncio.Queue[Ticker],
    ws_signal: httpx.AsyncClient,
) -> None:
    await first_tick(ws_standin, tickers)
    gaps_before = await metric(ws_signal, GAPS, product_id="BTC-USD", kind="sequence")
    ws_standin.lose_next_trade()
    await ws_standin.trade("BTC-USD", "50050.00")  # its market_trades message never comes
    lost = await asyncio.wait_for(tickers.get(), 15)
    assert lost.price == Decimal("50050.00")
    status = await until(lambda: _status_at_least(ws_signal, "gap_fills", 1), "a gap filled")
    assert (status["sequence_gaps"], status["resubscribes"], status["gap_fills"]) == (1, 1, 1)
    assert market_polls(standin) == 1  # one REST poll, for the gap
    kinds = [(m["type"], m["channel"]) for m in ws_standin.subscribe_messages[3:]]
    assert kinds == [("unsubscribe", c) for c in ("heartbeats", "ticker", "market_trades")] + [
        ("subscribe", c) for c in ("heartbeats", "ticker", "market_trades")
    ]
    assert await metric(ws_signal, GAPS, product_id="BTC-USD", kind="sequence") == gaps_before + 1
    await until(lambda: _status_at_least(ws_signal, "messages", status["messages"] + 5), "more")
    assert tickers.empty()  # the snapshot after resubscribing repeats nothing
    assert (await feed_status(ws_signal))["connects"] == 1  # the same connection throughout


async def test_missed_heartbeats_are_a_gap_too(
    ws_standin: CoinbaseWsStandIn, ws_signal: httpx.AsyncClient
) -> None:
    await until(lambda: _status_at_least(ws_signal, "messages", 5), "heartbeats flowing")
    gaps_before = await metric(ws_signal, GAPS, product_id="BTC-USD", kind="heartbeat")
    ws_standin.skip_heartbeats(3)
    status = await until(lambda: _status_at_least(ws_signal, "heartbeat_gaps", 1), "a gap")
    assert status["sequence_gaps"] == 0
    await until(lambda: _status_at_least(ws_signal, "resubscribes", 1), "a resubscribe")
    assert await metric(ws_signal, GAPS, product_id="BTC-USD", kind="heartbeat") == gaps_before + 1


async def test_a_silent_connection_is_closed_and_opened_again(
    ws_standin: CoinbaseWsStandIn, tickers: asyncio.Queue[Ticker], ws_signal: httpx.AsyncClient
) -> None:
    await until(lambda: ws_standin.subscribed("BTC-USD"), "a WebSocket subscription")
    ws_standin.go_silent()
    status = await until(lambda: _status_at_least(ws_signal, "disconnects", 1), "given up on")
    assert "no message for" in status["last_error"]
    ws_standin.go_silent(False)
    await until(lambda: _status_at_least(ws_signal, "connects", 2), "a new connection")
    await ws_standin.trade("BTC-USD", "50000.00")
    assert (await asyncio.wait_for(tickers.get(), 15)).price == Decimal("50000.00")


@pytest.mark.parametrize("ws_signal", [{"stale_after_s": 1.0}], indirect=True)
async def test_a_dead_websocket_falls_back_to_rest_polling_and_comes_back_when_it_answers(
    standin: CoinbaseStandIn,
    ws_standin: CoinbaseWsStandIn,
    tickers: asyncio.Queue[Ticker],
    ws_signal: httpx.AsyncClient,
) -> None:
    await until(lambda: ws_standin.subscribed("BTC-USD"), "a WebSocket subscription")
    await ws_standin.stop()  # the server is gone: connections refused
    status = await until(lambda: _status_has(ws_signal, transport="rest"), "the REST fallback")
    assert status["connect_failures"] >= 2
    assert await metric(ws_signal, FALLBACK, product_id="BTC-USD") == 1
    standin.trade("BTC-USD", "50000.00")  # on the REST tape only
    polled = await asyncio.wait_for(tickers.get(), 15)
    assert (polled.price, polled.source) == (Decimal("50000.00"), "coinbase")
    assert (await feed_status(ws_signal))["rest"]["ticks"] >= 1
    # Stale detection is the service's, whatever the transport: a silent tape goes stale.
    await until(lambda: _stale_is(ws_signal, True), "stale while nothing trades")
    await ws_standin.start()  # same port: the WebSocket answers again
    back = await until(lambda: _status_has(ws_signal, transport="websocket"), "back on WS")
    assert back["connects"] == 2
    assert await metric(ws_signal, FALLBACK, product_id="BTC-USD") == 0
    await ws_standin.trade("BTC-USD", "50100.00")
    assert (await asyncio.wait_for(tickers.get(), 15)).price == Decimal("50100.00")
    await until(lambda: _stale_is(ws_signal, False), "fresh again")
    assert tickers.empty()  # no trade published twice across the switches


async def test_the_server_certificate_is_checked_on_wss(
    tmp_path: Path, nats_url: str, standin: CoinbaseStandIn, tickers: asyncio.Queue[Ticker]
) -> None:
    secure = CoinbaseWsStandIn(rest=standin, certificate=make_certificate(tmp_path))
    async with secure:
        # Trusting the stand-in's own CA: connected, ticks flow.
        trusted = build(ws_settings(tmp_path, nats_url, standin, secure.url))
        await trusted.start()
        try:
            await until(lambda: secure.connects >= 1 and secure.connections, "a TLS connection")
            await secure.trade("BTC-USD", "50000.00")
            assert (await asyncio.wait_for(tickers.get(), 15)).price == Decimal("50000.00")
        finally:
            await trusted.stop()
        # The system's trust store does not know it: refused, REST polling stands in.
        untrusted = build(ws_settings(tmp_path, nats_url, standin, secure.url,
                                      coinbase_ca_file=None))  # fmt: skip
        await untrusted.start()
        transport = httpx.ASGITransport(app=untrusted.http_app())
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://signal") as web:
                status = await until(lambda: _status_has(web, transport="rest"), "refused")
            assert "CERTIFICATE_VERIFY_FAILED" in status["last_error"]
        finally:
            await untrusted.stop()
        assert secure.connects == 1
