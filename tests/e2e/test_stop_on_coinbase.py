"""The stopped-stack test against the Coinbase stand-in (issue 22): the four services in
production mode, the executor trading through the real SDK on the local HTTPS stand-in. A stop
rests on the "exchange"; every service is killed; the stand-in's price falls through the stop and
fills it; on restart the position is booked flat at the stop's fill, nothing placed twice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e.conftest import HERE, get_json, publish, stack_config, started, wait_for
from tests.support.coinbase_standin import PREFIX, ApiKey, CoinbaseStandIn, make_api_key
from tranche.stack import EmbeddedStack

pytestmark = pytest.mark.e2e
SERVICES = ("signal", "safety", "executor", "ledger")
BOT = "cb-stop"


@pytest.fixture(scope="module")
def key() -> ApiKey:
    return make_api_key()


@pytest.fixture(scope="module")
def standin(key: ApiKey, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoinbaseStandIn]:
    running = CoinbaseStandIn(key, tmp_path_factory.mktemp("standin")).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def production_stack(
    standin: CoinbaseStandIn, key: ApiKey, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedStack]:
    config = stack_config(
        tmp_path_factory.mktemp("cbstop"), SERVICES,
        config_file=HERE / "bots_coinbase.toml",
        extra_env={
            "TRANCHE_OUTBOX_POLL_S": "0.5", "TRANCHE_MODE": "production",
            "TRANCHE_LIVE_TRADING_CONFIRMED": "true",
        },
        service_env={"executor": {
            "TRANCHE_COINBASE_API_KEY": key.name, "TRANCHE_COINBASE_API_SECRET": key.secret,
            "TRANCHE_COINBASE_BASE_URL": standin.base_url,
            "TRANCHE_COINBASE_CA_FILE": str(standin.cert_file),
            "TRANCHE_POLL_INTERVAL_S": "0.2", "TRANCHE_POLL_MAX_INTERVAL_S": "3",
        }},
    )  # fmt: skip
    with started(config) as running:
        yield running


def ledger_position(stack: EmbeddedStack, status: str) -> dict | None:
    found = get_json(f"{stack.config.url('ledger')}/positions/{BOT}?mode=production")
    return found["position"] if found and found["position"]["status"] == status else None


def tick(stack: EmbeddedStack, price: str) -> None:
    """A BTC-USD price now (production trades on the wall clock)."""
    at = datetime.now(UTC).isoformat()
    body = f'{{"product_id":"BTC-USD","price":"{price}","time":"{at}"}}'.encode()
    publish(stack.config.admin_url, "tranche.market.ticker.BTC-USD", body)


def test_a_stop_on_coinbase_acts_while_the_whole_stack_is_down(
    production_stack: EmbeddedStack, standin: CoinbaseStandIn
) -> None:
    stack = production_stack
    tick(stack, "50000")
    body = json.dumps({"side": "buy", "temperature": 80}).encode()
    publish(stack.config.nats_url_as("operator"), f"tranche.signals.inject.{BOT}", body)
    position = wait_for(lambda: ledger_position(stack, "open"), timeout=90, what="the position")
    tick(stack, "50000")  # the signal asks the stop at a price it has seen

    def resting():
        found = [o for o in standin.orders.values() if "stop_limit_stop_limit_gtc" in
                 o.configuration and o.status == "OPEN"]  # fmt: skip
        return found[0] if len(found) == 1 else None

    stop = wait_for(resting, timeout=60, what="the stop resting at the stand-in")
    terms = stop.configuration["stop_limit_stop_limit_gtc"]
    assert Decimal(terms["base_size"]) == Decimal(position["quantity"])
    assert terms["stop_direction"] == "STOP_DIRECTION_STOP_DOWN"

    for name in SERVICES:
        stack.stop_service(name, kill=True)
    through = str((Decimal(terms["stop_price"]) - Decimal("10")).quantize(Decimal("0.01")))
    assert standin.move(through) == [stop.order_id]  # filled while nothing of Tranche runs
    for name in SERVICES:
        stack.start_service(name, move_if_taken=True)
    for name in SERVICES:
        stack.wait_ready(name, timeout=60)

    wait_for(lambda: ledger_position(stack, "flat"), timeout=90, what="flat at the stop's fill")
    fills = get_json(f"{stack.config.url('ledger')}/fills?bot_id={BOT}&mode=production")
    sells = [f for f in fills if f["side"] == "sell"]
    assert len(sells) == 1 and Decimal(sells[0]["price"]) == Decimal(through), sells
    assert sells[0]["intent_reason"] == "STOP_ON_EXCHANGE"  # booked as the exit it is
    history = get_json(f"{stack.config.url('ledger')}/positions/{BOT}/history?mode=production")
    assert [p["exit_reason"] for p in history["positions"]] == ["STOP_ON_EXCHANGE"]
    # Nothing placed twice: one create per client_order_id at the stand-in.
    creates = [p for m, p in standin.requests if m == "POST" and p == f"{PREFIX}/orders"]
    ids = [o.client_order_id for o in standin.orders.values()]
    assert len(ids) == len(set(ids)) == len(creates) == 2, (ids, creates)
    assert Path(stack.config.data_dir).exists()
