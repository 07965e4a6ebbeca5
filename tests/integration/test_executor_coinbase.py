"""The Coinbase adapter through the real SDK (``RESTClient``) against a local HTTPS stand-in that
checks every JWT; production's triple opt-in; the API secret never in anything the service writes.
Never the internet."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import nats
import pytest

from services.executor.app import build, production_refusal
from services.executor.config import ExecutorSettings
from services.executor.exchanges.base import (
    ExchangeError,
    OrderRefused,
    OrderRequest,
    OutcomeUnknown,
    RateLimited,
)
from services.executor.gateway import Gateway
from services.executor.orders import convert_fill
from services.executor.ratelimit import RateLimiter
from shared.contracts import OrderApproved, Reason, TradeIntent
from shared.money import utc_now
from tests.support.coinbase_standin import ApiKey, CoinbaseStandIn, make_api_key
from tests.support.live_executor import coinbase_adapter as adapter
from tests.support.nats_server import free_port
from tests.support.signing import signed

ROOT = Path(__file__).resolve().parents[2]


def market_buy(cid: str, quote: str = "100") -> OrderRequest:
    return OrderRequest(cid, "BTC-USD", "buy", "market", quote_size=Decimal(quote))


def test_a_market_buy_sized_in_quote_goes_through_the_sdk_with_a_checked_jwt(
    standin: CoinbaseStandIn, key: ApiKey
) -> None:
    coinbase = adapter(standin, key)
    placed = coinbase.place(market_buy("tranche-1"))
    order = coinbase.get(placed.exchange_order_id)
    (fill,) = [convert_fill(f) for f in coinbase.fills(placed.exchange_order_id)]
    assert order.status == "FILLED" and order.number_of_fills == 1
    # 100 USD at 50,000 with the 0.6 % fee inside the 100 (size_inclusive_of_fees), on the
    # product's 0.00000001 increment: 0.00198807 BTC, not 100 BTC and not 0.002.
    assert fill.size == Decimal("0.00198807") and fill.entry_id and fill.trade_type == "FILL"
    assert fill.fee == Decimal("0.596421") and fill.liquidity == "taker"
    assert fill.size * fill.price + fill.fee <= Decimal("100")
    assert standin.auth_failures == [] and len(standin.requests) == 3


def test_a_repeated_client_order_id_answers_with_the_existing_order(
    standin: CoinbaseStandIn, key: ApiKey
) -> None:
    coinbase = adapter(standin, key)
    first = coinbase.place(market_buy("tranche-2"))
    again = coinbase.place(market_buy("tranche-2"))
    assert first.exchange_order_id == again.exchange_order_id and len(standin.orders) == 1
    found = coinbase.find("tranche-2", "BTC-USD", datetime.now(UTC) - timedelta(minutes=5))
    assert found is not None and found.exchange_order_id == first.exchange_order_id


def test_a_limit_order_rests_fills_in_parts_and_cancels(
    standin: CoinbaseStandIn, key: ApiKey
) -> None:
    coinbase = adapter(standin, key)
    placed = coinbase.place(
        OrderRequest(
            "tranche-3", "BTC-USD", "sell", "limit", None, Decimal("0.01"), Decimal("60000")
        )
    )
    assert [o.client_order_id for o in coinbase.open_orders()] == ["tranche-3"]
    standin.fill(placed.exchange_order_id, "0.004")
    order = coinbase.get(placed.exchange_order_id)
    assert order.status == "OPEN" and order.filled_size == Decimal("0.004")
    coinbase.cancel(placed.exchange_order_id)
    coinbase.cancel(placed.exchange_order_id)  # already cancelled: not an error
    (fill,) = [convert_fill(f) for f in coinbase.fills(placed.exchange_order_id)]
    assert coinbase.get(placed.exchange_order_id).status == "CANCELLED"
    assert fill.liquidity == "maker" and fill.size == Decimal("0.004")


@pytest.mark.parametrize(
    ("fault", "error"),
    [("429", RateLimited), ("503", ExchangeError), ("500", ExchangeError)],
)
def test_http_errors_become_our_failure_kinds(
    standin: CoinbaseStandIn, key: ApiKey, fault: str, error: type
) -> None:
    standin.faults.append(fault)
    with pytest.raises(error) as raised:
        adapter(standin, key).place(market_buy("tranche-4"))
    assert raised.value.retryable and standin.orders == {}
    if fault == "429":
        assert raised.value.retry_after_s == 1.0


def test_a_success_false_answer_refuses_the_order_with_coinbase_s_code(
    standin: CoinbaseStandIn, key: ApiKey
) -> None:
    standin.reject_next = "INSUFFICIENT_FUND"
    with pytest.raises(OrderRefused) as raised:
        adapter(standin, key).place(market_buy("tranche-5"))
    assert raised.value.code == "INSUFFICIENT_FUND"


def test_a_timeout_after_the_order_was_created_is_unknown_then_found_by_client_order_id(
    standin: CoinbaseStandIn, key: ApiKey
) -> None:
    coinbase = adapter(standin, key, timeout_s=0.5)
    standin.faults.append("timeout_after_create")
    with pytest.raises(OutcomeUnknown):
        coinbase.place(market_buy("tranche-6"))
    found = coinbase.find("tranche-6", "BTC-USD", datetime.now(UTC) - timedelta(minutes=1))
    assert found is not None and found.status == "FILLED" and len(standin.orders) == 1


def test_a_wrong_key_is_refused_by_the_stand_in_and_is_not_an_order_failure(
    standin: CoinbaseStandIn, key: ApiKey
) -> None:
    with pytest.raises(ExchangeError) as raised:
        adapter(standin, make_api_key()).place(market_buy("tranche-7"))
    assert raised.value.code == "EXCHANGE_UNAUTHORIZED" and not isinstance(
        raised.value, OrderRefused
    )
    assert standin.auth_failures and key.secret not in str(raised.value)


async def test_a_429_and_5xx_storm_through_the_gateway_places_one_order(
    standin: CoinbaseStandIn, key: ApiKey
) -> None:
    standin.faults.extend(["429", "503", "500", "503"])
    waits: list[float] = []

    async def no_sleep(seconds: float) -> None:
        waits.append(seconds)

    gateway = Gateway(
        adapter(standin, key), RateLimiter(30), attempts=5, base_delay_s=0.1, seed=1,
        sleep=no_sleep,
    )  # fmt: skip
    placed = await gateway.call("create_order", gateway.exchange.place, market_buy("tranche-8"))
    assert placed.exchange_order_id in standin.orders and len(standin.orders) == 1
    assert gateway.retries == 4 and waits[0] == 1.0  # Retry-After, then jittered backoff
    assert all(0 <= w <= 0.8 for w in waits[1:])


async def test_one_rate_limiter_holds_every_call_to_its_rate() -> None:
    limiter = RateLimiter(per_second=20, burst=1)
    started = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for _ in range(21)))
    assert time.monotonic() - started >= 0.95  # 20 waits of 1/20 s


# -- production's opt-in ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "missing"),
    [
        ({}, ["TRANCHE_COINBASE_API_KEY", "TRANCHE_LIVE_TRADING_CONFIRMED"]),
        ({"coinbase_api_key": "k", "coinbase_api_secret": "s"}, ["LIVE_TRADING_CONFIRMED"]),
        ({"live_trading_confirmed": True}, ["TRANCHE_COINBASE_API_KEY and"]),
        ({"live_trading_confirmed": True, "coinbase_api_key": "k"}, ["API_SECRET"]),
    ],
)
def test_production_without_all_three_opt_ins_does_not_start_and_says_which_is_missing(
    settings: dict, missing: list[str], tmp_path: Path
) -> None:
    config = ExecutorSettings(mode="production", data_dir=tmp_path, **settings)
    with pytest.raises(SystemExit) as stopped:
        build(config)
    for name in missing:
        assert name in str(stopped.value)
    assert "s" not in settings.get("coinbase_api_secret", "x") or "secret=" not in str(
        stopped.value
    )


def test_mock_mode_needs_no_opt_in() -> None:
    assert production_refusal(ExecutorSettings(mode="mock")) is None


# -- the service in production mode, end to end, grepped for the secret -------------------------


def production_approval(n: int) -> OrderApproved:
    intent = TradeIntent(
        message_id=f"i-{n}", correlation_id=f"i-{n}", time=utc_now(), intent_id=f"i-{n}",
        signal_id="s", bot_id="live-bot", product_id="BTC-USD", action="entry", side="buy",
        quote_size=Decimal("100"), temperature=Decimal(80), band="hot",
        reason=Reason(code="SIGNAL", message="t"),
    )  # fmt: skip
    return OrderApproved(
        message_id=f"d-{n}", correlation_id=f"i-{n}", time=utc_now(), intent=intent,
        client_order_id=f"c-{n}", mode="production", decided_at=utc_now(),
    )  # fmt: skip


async def order_events(nc, bot: str) -> list[dict]:
    js = nc.jetstream()
    info = await js.stream_info("TRANCHE_ORDERS")
    found = []
    for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
        message = await js.get_msg("TRANCHE_ORDERS", seq)
        if message.subject == f"tranche.orders.events.{bot}":
            found.append(json.loads(message.data))
    return found


async def test_production_trades_on_coinbase_and_never_shows_the_secret(
    standin: CoinbaseStandIn, key: ApiKey, nats_url: str, tmp_path: Path
) -> None:
    port = free_port()
    log_file = tmp_path / "executor.log"
    env = {
        **os.environ, "TRANCHE_MODE": "production", "TRANCHE_NATS_URL": nats_url,
        "TRANCHE_DATA_DIR": str(tmp_path), "TRANCHE_HTTP_PORT": str(port),
        "TRANCHE_COINBASE_API_KEY": key.name, "TRANCHE_COINBASE_API_SECRET": key.secret,
        "TRANCHE_LIVE_TRADING_CONFIRMED": "true", "TRANCHE_COINBASE_BASE_URL": standin.base_url,
        "TRANCHE_COINBASE_CA_FILE": str(standin.cert_file), "TRANCHE_POLL_INTERVAL_S": "0.1",
        "TRANCHE_OUTBOX_POLL_S": "0.2", "TRANCHE_LOG_LEVEL": "debug",
    }  # fmt: skip
    with open(log_file, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.executor"], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    nc = None
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert process.poll() is None, log_file.read_text()
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        nc = await nats.connect(nats_url)
        payload = production_approval(1).model_dump_json().encode()
        await nc.jetstream().publish(
            "tranche.orders.approved.live-bot",
            payload,
            headers=signed("tranche.orders.approved.live-bot", payload),
            stream="TRANCHE_ORDERS",
        )
        standin.faults.extend(["429", "503"])  # and a small storm on the way
        deadline = time.monotonic() + 20
        events: list[dict] = []
        while time.monotonic() < deadline and "filled" not in [e["status"] for e in events]:
            await asyncio.sleep(0.2)
            events = await order_events(nc, "live-bot")
        assert [e["status"] for e in events] == ["submitted", "filled"]
        assert events[1]["filled_size"] == "0.00198807" and events[1]["mode"] == "production"
        assert len(standin.orders) == 1 and standin.auth_failures == []
        (order,) = standin.orders.values()
        assert order.client_order_id == "tranche-c-1"
        answers = [
            httpx.get(f"{base}{path}", timeout=5).text
            for path in ("/health", "/ready", "/metrics", "/orders", "/orders/c-1",
                         "/openapi.json", "/orders/nope")
        ]  # fmt: skip
    finally:
        process.terminate()
        process.wait(timeout=15)
        if nc is not None:
            await nc.close()
    everything = "\n".join([log_file.read_text(), *answers, json.dumps(events)])
    assert "order.changed" in everything  # the log is there to grep
    secret_lines = [
        line for line in key.secret.splitlines() if line and not line.startswith("-----")
    ]
    for fragment in [key.secret, *secret_lines]:
        assert fragment not in everything
