"""The executor as a real process in the running stack: a kill -9 between "sent" and "recorded",
and a limit order that partly fills, times out, is cancelled and has its fills booked.

Approvals are published straight onto the approvals subject (as safety would), so these tests
exercise the executor and the ledger whatever safety's limits say."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from decimal import Decimal

import nats
import pytest

from shared.contracts import OrderApproved, Reason, TradeIntent
from shared.money import utc_now
from shared.signing import Signer
from tests.e2e.conftest import get_json, stream_messages, ticker, wait_for
from tranche import credentials
from tranche.stack import EmbeddedStack

pytestmark = pytest.mark.e2e


def approve(stack: EmbeddedStack, n: str, bot: str, msg_id: str | None = None, **kw) -> str:
    fields = {
        "message_id": f"i-{n}", "correlation_id": f"i-{n}", "time": utc_now(),
        "intent_id": f"i-{n}", "signal_id": "s", "bot_id": bot, "product_id": "ETH-BTC",
        "action": "entry", "side": "buy", "quote_size": Decimal("0.01"),
        "temperature": Decimal(80), "band": "hot", "reason": Reason(code="SIGNAL", message="t"),
    } | kw  # fmt: skip
    approval = OrderApproved(
        message_id=f"d-{n}", correlation_id=f"i-{n}", time=utc_now(),
        intent=TradeIntent(**fields), client_order_id=f"exec-{n}", mode="mock",
        decided_at=utc_now(),
    )  # fmt: skip

    subject, payload = f"tranche.orders.approved.{bot}", approval.model_dump_json().encode()
    # Signed with the stack's own key, as its safety signs (shared/signing.py).
    private_key, _ = credentials.signing_keys(stack.config.data_dir.resolve())
    headers = {"Nats-Msg-Id": msg_id or approval.message_id}
    headers |= Signer(private_key.read_text()).headers(subject, payload)

    async def send() -> None:
        nc = await nats.connect(stack.config.admin_url)
        await nc.jetstream().publish(subject, payload, headers=headers, stream="TRANCHE_ORDERS")
        await nc.close()

    asyncio.run(send())
    return approval.client_order_id


def exchange_orders(stack: EmbeddedStack, cid: str) -> int:
    """Orders the mock exchange holds for ``cid`` (its book is in the executor's database)."""
    with sqlite3.connect(stack.config.data_dir / "executor.db") as db:
        (count,) = db.execute(
            "SELECT count(*) FROM mock_exchange_orders_v2 WHERE client_order_id = ?",
            (f"tranche-{cid}",),
        ).fetchone()
    return count


def positions(stack: EmbeddedStack, bot: str) -> list[dict]:
    """Every position the ledger published for ``bot`` (its public output)."""
    found = stream_messages(
        stack.config.admin_url, "TRANCHE_LEDGER", f"tranche.ledger.positions.{bot}"
    )
    return [json.loads(message.data) for message in found]


def order(stack: EmbeddedStack, cid: str, status: str):
    def probe():
        found = get_json(f"{stack.config.url('executor')}/orders/{cid}")
        return found if found and found["status"] == status else None

    return probe


def test_a_kill_9_between_sent_and_recorded_ends_with_exactly_one_exchange_order(
    stack: EmbeddedStack,
) -> None:
    url = stack.config.admin_url
    stack.restart_service("executor", env={"TRANCHE_EXECUTOR_FAULT": "crash_after_send"})
    try:
        ticker(url, "0.09")
        cid = approve(stack, "kill9", "exec-kill")
        process = stack.services["executor"]
        assert wait_for(lambda: process.poll(), what="the executor to die after sending") == 87
        assert exchange_orders(stack, cid) == 1  # the exchange has it; the store says "new"
    finally:
        stack.config.service_env["executor"] = {}
        stack.start_service("executor")
        stack.wait_ready("executor")
    filled = wait_for(order(stack, cid, "filled"), what="the order found and filled")
    assert Decimal(filled["filled_size"]) == Decimal("0.11111111")
    # And the approval again (as JetStream redelivers an unacknowledged one): still one order.
    approve(stack, "kill9", "exec-kill", msg_id="again")
    wait_for(lambda: positions(stack, "exec-kill"), what="the fill booked by the ledger")
    time.sleep(1)
    assert exchange_orders(stack, cid) == 1
    assert [Decimal(p["quantity"]) for p in positions(stack, "exec-kill")] == [
        Decimal("0.11111111")
    ]


def test_a_partly_filled_limit_order_times_out_is_cancelled_and_its_fills_booked(
    stack: EmbeddedStack,
) -> None:
    url = stack.config.admin_url
    stack.restart_service(
        "executor",
        env={"TRANCHE_MOCK_PARTIAL_FILL_RATIO": "0.5", "TRANCHE_LIMIT_ORDER_TTL_S": "3"},
    )
    try:
        ticker(url, "0.09")
        cid = approve(
            stack, "limit", "exec-limit", order_type="limit", limit_price=Decimal("0.085"),
            quote_size=None, base_size=Decimal("0.2"),
        )  # fmt: skip
        wait_for(order(stack, cid, "open"), what="the limit order resting")
        ticker(url, "0.084")
        cancelled = wait_for(order(stack, cid, "cancelled"), what="cancelled by its ttl")
        assert Decimal(cancelled["filled_size"]) == Decimal("0.1")
        assert cancelled["cancel_code"] == "LIMIT_TTL" and len(cancelled["fills"]) == 1

        (position,) = wait_for(lambda: positions(stack, "exec-limit"), what="the fill booked")
        assert Decimal(position["quantity"]) == Decimal("0.1") and position["status"] == "open"
        assert exchange_orders(stack, cid) == 1
    finally:
        stack.restart_service("executor", env={})


def test_order_events_carry_every_status_once(stack: EmbeddedStack) -> None:
    """The limit order above, read back from the stream: each change published once."""

    async def read() -> list[dict]:
        nc = await nats.connect(stack.config.admin_url)
        js = nc.jetstream()
        info = await js.stream_info("TRANCHE_ORDERS")
        found = []
        for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
            message = await js.get_msg("TRANCHE_ORDERS", seq)
            if message.subject == "tranche.orders.events.exec-limit":
                found.append(json.loads(message.data))
        await nc.close()
        return found

    statuses = [event["status"] for event in asyncio.run(read())]
    assert statuses == ["submitted", "open", "partially_filled", "cancelled"]
