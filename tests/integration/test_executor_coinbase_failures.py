"""The executor in production mode, in-process, against the Coinbase stand-in when the exchange
keeps failing: a revoked key and an order the exchange has lost. Every failure backs off, the
time-to-live cancel is asked on its own schedule whatever the polls return, and the number of
requests per order stays bounded. (SQLite only: the scheduling does not depend on the database.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import nats
import pytest
from sqlmodel import Session

from services.executor.app import build
from services.executor.config import ExecutorSettings
from services.executor.exchanges.coinbase import CoinbaseExchange
from services.executor.store import OrderRow
from shared.contracts import OrderApproved, Reason, TradeIntent
from shared.money import utc_now
from shared.service import Service
from tests.support.coinbase_standin import ApiKey, CoinbaseStandIn
from tests.support.waiting import eventually

PREFIX = "/api/v3/brokerage"
BOT = "live-bot"


@dataclass
class Live:
    service: Service
    standin: CoinbaseStandIn
    nc: Any

    def order(self, cid: str) -> OrderRow | None:
        with Session(self.service.engine) as session:
            return session.get(OrderRow, cid)

    def requests(self, method: str, path: str) -> int:
        return sum(1 for m, p in self.standin.requests if m == method and p.startswith(path))

    async def approve(self, n: int, **intent_kw: Any) -> str:
        fields = {
            "message_id": f"i-{n}", "correlation_id": f"i-{n}", "time": utc_now(),
            "intent_id": f"i-{n}", "signal_id": "s", "bot_id": BOT, "product_id": "BTC-USD",
            "action": "entry", "side": "buy", "base_size": Decimal("0.01"),
            "order_type": "limit", "limit_price": Decimal("40000"),
            "temperature": Decimal(80), "band": "hot", "reason": Reason(code="SIGNAL", message="t"),
        } | intent_kw  # fmt: skip
        approval = OrderApproved(
            message_id=f"d-{n}", correlation_id=f"i-{n}", time=utc_now(),
            intent=TradeIntent(**fields), client_order_id=f"c-{n}", mode="production",
            decided_at=utc_now(),
        )  # fmt: skip
        await self.nc.jetstream().publish(
            f"tranche.orders.approved.{BOT}",
            approval.model_dump_json().encode(),
            headers={"Nats-Msg-Id": approval.message_id},
            stream="TRANCHE_ORDERS",
        )
        return approval.client_order_id

    async def resting(self, cid: str) -> OrderRow:
        async def probe() -> OrderRow | None:
            row = self.order(cid)
            return row if row is not None and row.status == "open" else None

        return await eventually(probe, timeout=10, what=f"{cid} resting on the exchange")


@pytest.fixture
async def live(
    standin: CoinbaseStandIn, key: ApiKey, nats_url: str, tmp_path: Path
) -> AsyncIterator[Live]:
    settings = ExecutorSettings(
        mode="production", nats_url=nats_url, data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'executor.db'}",
        coinbase_api_key=key.name, coinbase_api_secret=key.secret, live_trading_confirmed=True,
        coinbase_base_url=standin.base_url, coinbase_ca_file=standin.cert_file,
        coinbase_timeout_s=2, outbox_poll_s=0.1, poll_interval_s=0.05, poll_max_interval_s=0.4,
        retry_base_delay_s=0.01, retry_max_delay_s=0.05,
    )  # fmt: skip
    service = build(settings, exchange=CoinbaseExchange.from_settings(settings))
    await service.start()
    nc = await nats.connect(nats_url)
    try:
        yield Live(service, standin, nc)
    finally:
        await service.stop()
        await nc.close()


WINDOW_S = 3.0
# With polls every 0.05 s doubling to 0.4 s, 3 s of failures need about 3 / 0.4 + 4 polls.
MOST_POLLS = 16


async def test_a_revoked_key_backs_off_and_the_ttl_cancel_goes_out_when_it_works_again(
    live: Live,
) -> None:
    cid = await live.approve(1, order_ttl_s=1)
    row = await live.resting(cid)
    path = f"{PREFIX}/orders/historical/{row.exchange_order_id}"
    before = live.requests("GET", path)
    live.standin.revoked = True
    await asyncio.sleep(WINDOW_S)  # the time-to-live (1 s) runs out while the key is refused
    polls = live.requests("GET", path) - before
    cancels = live.requests("POST", f"{PREFIX}/orders/batch_cancel")
    print(f"revoked key: {polls} get_order polls and {cancels} cancels in {WINDOW_S:g} s")
    assert polls <= MOST_POLLS, f"{polls} polls in {WINDOW_S} s with a revoked key"
    assert cancels >= 1, "the time-to-live cancel is asked even while polls fail"
    assert live.order(cid).cancel_code == "LIMIT_TTL"  # type: ignore[union-attr]
    live.standin.revoked = False

    async def cancelled() -> OrderRow | None:
        found = live.order(cid)
        return found if found is not None and found.status == "cancelled" else None

    done = await eventually(cancelled, timeout=10, what="cancelled once the key works again")
    assert done.cancel_code == "LIMIT_TTL"


async def test_an_order_the_exchange_lost_is_polled_with_back_off(live: Live) -> None:
    cid = await live.approve(2, order_ttl_s=1)
    row = await live.resting(cid)
    path = f"{PREFIX}/orders/historical/{row.exchange_order_id}"
    before = live.requests("GET", path)
    live.standin.lost.add(row.exchange_order_id)  # type: ignore[arg-type]
    await asyncio.sleep(WINDOW_S)
    polls = live.requests("GET", path) - before
    print(f"404s: {polls} get_order polls in {WINDOW_S:g} s")
    assert polls <= MOST_POLLS, f"{polls} polls in {WINDOW_S} s of 404 answers"
