"""The live Coinbase feed in the running signal service: the real SDK (``RESTClient``) polling the
local HTTPS stand-in's public ticker, tickers on real NATS with the exchange's trade time, no
repeated trade, a burst of 429/5xx survived, and stale data detected and then cleared.
Never the internet."""

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
from tests.support.coinbase_standin import CoinbaseStandIn, make_api_key
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
