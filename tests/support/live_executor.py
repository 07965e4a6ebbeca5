"""An executor in production mode, in-process, against the Coinbase stand-in (real NATS,
SQLite): what the integration tests of the production path drive."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nats
from pydantic import SecretStr
from sqlmodel import Session

from services.executor.app import build
from services.executor.config import ExecutorSettings
from services.executor.exchanges.coinbase import CoinbaseExchange
from services.executor.store import OrderRow, reasons_of
from shared.contracts import OrderApproved, Reason, TradeIntent
from shared.money import utc_now
from shared.service import Service
from tests.support.coinbase_standin import ApiKey, CoinbaseStandIn
from tests.support.signing import signed
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

    async def approve(self, n: int, decided_at: datetime | None = None, **intent_kw: Any) -> str:
        """Publish safety's approval of intent ``n`` (signed), decided ``decided_at`` (now)."""
        at = decided_at or utc_now()
        fields = {
            "message_id": f"i-{n}", "correlation_id": f"i-{n}", "time": at,
            "intent_id": f"i-{n}", "signal_id": "s", "bot_id": BOT, "product_id": "BTC-USD",
            "action": "entry", "side": "buy", "base_size": Decimal("0.01"),
            "order_type": "limit", "limit_price": Decimal("40000"),
            "temperature": Decimal(80), "band": "hot", "reason": Reason(code="SIGNAL", message="t"),
        } | intent_kw  # fmt: skip
        approval = OrderApproved(
            message_id=f"d-{n}", correlation_id=f"i-{n}", time=at,
            intent=TradeIntent(**fields), client_order_id=f"c-{n}", mode="production",
            decided_at=at,
        )  # fmt: skip
        subject, payload = f"tranche.orders.approved.{BOT}", approval.model_dump_json().encode()
        await self.nc.jetstream().publish(
            subject,
            payload,
            headers=signed(subject, payload, {"Nats-Msg-Id": approval.message_id}),
            stream="TRANCHE_ORDERS",
        )
        return approval.client_order_id

    async def resting(self, cid: str) -> OrderRow:
        async def probe() -> OrderRow | None:
            row = self.order(cid)
            return row if row is not None and row.status == "open" else None

        return await eventually(probe, timeout=10, what=f"{cid} resting on the exchange")

    async def statuses(self, cid: str) -> list[tuple[str, str | None]]:
        """(status, reason code) of every order event of ``cid`` on the stream, in order."""
        js = self.nc.jetstream()
        info = await js.stream_info("TRANCHE_ORDERS")
        found = []
        for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
            message = await js.get_msg("TRANCHE_ORDERS", seq)
            if message.subject.startswith("tranche.orders.events."):
                event = json.loads(message.data)
                if event["client_order_id"] == cid:
                    found.append((event["status"], (event["reason"] or {}).get("code")))
        return found

    def reason(self, cid: str) -> dict[str, str] | None:
        with Session(self.service.engine) as session:
            return reasons_of(session, [cid]).get(cid)

    async def settled(self, cid: str) -> OrderRow:
        """The order once final (or resting: whatever it became first)."""

        async def probe() -> OrderRow | None:
            row = self.order(cid)
            done = ("open", "filled", "failed", "cancelled", "expired")
            return row if row is not None and row.status in done else None

        return await eventually(probe, timeout=10, what=f"{cid} settled")


async def start_live(
    standin: CoinbaseStandIn, key: ApiKey, nats_url: str, tmp_path: Path, **settings: Any
) -> Live:
    config = ExecutorSettings(
        mode="production", nats_url=nats_url, data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'executor.db'}",
        coinbase_api_key=key.name, coinbase_api_secret=key.secret, live_trading_confirmed=True,
        coinbase_base_url=standin.base_url, coinbase_ca_file=standin.cert_file,
        coinbase_timeout_s=2, outbox_poll_s=0.1, poll_interval_s=0.05, poll_max_interval_s=0.4,
        retry_base_delay_s=0.01, retry_max_delay_s=0.05, **settings,
    )  # fmt: skip
    service = build(config, exchange=CoinbaseExchange.from_settings(config))
    await service.start()
    return Live(service, standin, await nats.connect(nats_url))


async def stop_live(live: Live) -> None:
    await live.service.stop()
    await live.nc.close()


def coinbase_adapter(
    standin: CoinbaseStandIn, key: ApiKey, timeout_s: float = 1.0
) -> CoinbaseExchange:
    """The Coinbase adapter (the real SDK) pointed at the stand-in."""
    settings = SimpleNamespace(
        coinbase_api_key=SecretStr(key.name), coinbase_api_secret=SecretStr(key.secret),
        coinbase_base_url=standin.base_url, coinbase_timeout_s=timeout_s,
        coinbase_ca_file=standin.cert_file,
    )  # fmt: skip
    return CoinbaseExchange.from_settings(settings)
