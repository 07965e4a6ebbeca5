"""Many bots trading through the running services while faults are injected, Jepsen-style, then
every invariant checked over the stores and the recorded messages (tests/faults/workload.py).

Faults, all in one run: a mock exchange answering 429, 5xx, timeouts after placing, rejects and
partial fills (seeded); safety and ledger nacking every first delivery (a redelivery storm);
kill -9 of two services at once mid-round; every recorded intent, approval and order event
published again with its own and with a new message id; the NATS server killed, its stream data
deleted, and the streams refilled from the services' outboxes (``tranche outbox replay``);
hostile payloads. The services are not restarted after the wipe: they heal on their own.
``TRANCHE_FAULTS_LONG=1`` runs more bots and rounds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import nats
import pytest

from tests.e2e.conftest import publish, started, stream_messages
from tests.faults.workload import (
    BOTS,
    LEDGER_ENV,
    LONG,
    MOCK_FAULTS,
    RECORD,
    SAFETY_ENV,
    bots_file,
    check_invariants,
    query,
    replay_outboxes,
    scalar,
    settle,
    wipe_nats,
)
from tests.support.nats_server import free_port
from tranche.stack import EmbeddedStack, StackConfig

pytestmark = pytest.mark.e2e

NAMES = [f"wl-{n}" for n in range(BOTS)]
ROUNDS = 6 if LONG else 3
FIRST_KILL, SECOND_KILL = ("executor", "ledger"), ("signal", "safety")
HOSTILE = {
    "tranche.signals.inject.wl-0": (b'{"side":"buy","leverage":10}', "signal"),
    "tranche.intents.wl-1": (b'{"quote_size": 1e308}', "safety"),
    "tranche.orders.approved.wl-2": (b"\xff\xfe not json", "executor"),
    "tranche.orders.events.wl-3": (b'{"status":"filled","fills":[{"size":"-5"}]}', "ledger"),
}


@pytest.fixture(scope="module")
def workload_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    root = tmp_path_factory.mktemp("workload")
    config = StackConfig(
        data_dir=root / "data",
        nats_port=free_port(),
        nats_monitor_port=free_port(),
        ports={name: free_port() for name in ("signal", "safety", "executor", "ledger")},
        replay="",
        config_file=bots_file(root / "bots.toml", NAMES),
        extra_env={"TRANCHE_OUTBOX_POLL_S": "0.5", "TRANCHE_LOG_LEVEL": "warning"},
        service_env={"safety": SAFETY_ENV, "ledger": LEDGER_ENV, "executor": MOCK_FAULTS},
    )
    with started(config) as running:
        yield running


class Market:
    """Market time moves 10 minutes a round: past every cooldown, inside every hourly window."""

    def __init__(self) -> None:
        self.at = datetime(2018, 1, 20, tzinfo=UTC)

    def tick(self, stack: EmbeddedStack, advance: bool = True) -> None:
        """A price 10 minutes on (or, after a restart, the same price again: a restarted
        service has seen none, and there is never a default price)."""
        if advance:
            self.at += timedelta(minutes=10)
        body = f'{{"product_id":"ETH-BTC","price":"0.09","time":"{self.at.isoformat()}"}}'
        publish(stack.config.admin_url, "tranche.market.ticker.ETH-BTC", body.encode())
        time.sleep(0.3)  # core NATS: let every service see the price before the signals


def inject_round(stack: EmbeddedStack, side: str, during=None) -> None:
    """One signal per bot; ``during`` runs after half of them were sent."""

    async def send() -> None:
        nc = await nats.connect(stack.config.admin_url)
        for n, bot in enumerate(NAMES):
            if n == len(NAMES) // 2 and during is not None:
                await nc.flush()
                await asyncio.to_thread(during)
            await nc.publish(f"tranche.signals.inject.{bot}", f'{{"side":"{side}"}}'.encode())
        await nc.flush()
        await nc.close()

    asyncio.run(send())
    RECORD.totals["signals injected"] += len(NAMES)


def kill_two(stack: EmbeddedStack, victims: tuple[str, str], market: Market) -> None:
    for victim in victims:
        stack.stop_service(victim, kill=True)
    RECORD.faults[f"kill -9 {'+'.join(victims)}"] += 1
    time.sleep(1)  # a pause before the restart, as a crashed pod would have
    for victim in victims:
        stack.start_service(victim, move_if_taken=True)
    for victim in victims:
        stack.wait_ready(victim, timeout=60)
    market.tick(stack, advance=False)


def republish_recorded(stack: EmbeddedStack) -> None:
    """Every recorded intent, approval and order event again: once with its own message id
    (JetStream drops it), once with a new one (stored again: the consumers must drop it)."""

    async def storm() -> None:
        nc = await nats.connect(stack.config.admin_url)
        js = nc.jetstream()
        for stream in ("TRANCHE_INTENTS", "TRANCHE_ORDERS"):
            info = await js.stream_info(stream)
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                message = await js.get_msg(stream, seq)
                own = (message.headers or {}).get("Nats-Msg-Id", f"seq-{seq}")
                # A copy keeps safety's signature: the consumers' idempotency is what is tested.
                signature = {
                    k: v for k, v in (message.headers or {}).items() if k == "Tranche-Signature"
                }
                same = await js.publish(message.subject, message.data, stream=stream,
                                        headers={"Nats-Msg-Id": own, **signature})  # fmt: skip
                RECORD.faults["duplicate publish, same id"] += 1
                RECORD.totals["duplicates JetStream dropped"] += int(same.duplicate)
                await js.publish(message.subject, message.data, stream=stream,
                                 headers={"Nats-Msg-Id": f"{own}-again", **signature})  # fmt: skip
                RECORD.faults["duplicate publish, new id"] += 1
        await nc.close()

    asyncio.run(storm())


def wipe_nats_and_replay(stack: EmbeddedStack, since: datetime) -> None:
    """kill -9 NATS, delete its stream data, start it empty, refill from the outboxes with the
    operator's command; the services, left running, make their consumers again themselves."""
    wipe_nats(stack)
    RECORD.faults["NATS kill -9 + stream data deleted"] += 1
    RECORD.totals["messages refilled from outboxes"] += replay_outboxes(stack, since)
    for name in stack.config.services:
        stack.wait_ready(name, timeout=60)


def test_many_bots_trade_through_every_fault_and_every_invariant_holds(
    workload_stack: EmbeddedStack,
) -> None:
    stack = workload_stack
    started = datetime.now(UTC) - timedelta(minutes=1)
    market = Market()
    sides = ["buy" if n % 2 == 0 else "sell" for n in range(ROUNDS)]
    for n, side in enumerate(sides):
        market.tick(stack)
        if n == 0:
            inject_round(stack, side, during=lambda: kill_two(stack, FIRST_KILL, market))
        elif n == 1:
            inject_round(stack, side, during=lambda: kill_two(stack, SECOND_KILL, market))
            settle(stack)
            republish_recorded(stack)
        elif n == 2:
            settle(stack)
            wipe_nats_and_replay(stack, started)
            market.tick(stack)
            inject_round(stack, side)
            for subject, (body, _service) in HOSTILE.items():
                publish(stack.config.admin_url, subject, body)
                RECORD.faults["hostile payload"] += 1
        else:
            inject_round(stack, side)
        settle(stack)

    by_status = "SELECT status, COUNT(*) FROM executor_orders_v2 GROUP BY status"
    for status, count in query(stack, "executor", by_status):
        RECORD.totals[f"orders {status}"] += count
    RECORD.totals["fills booked"] += scalar(stack, "ledger", "SELECT COUNT(*) FROM ledger_fills")
    RECORD.totals["messages sent (outbox rows)"] += sum(
        scalar(stack, name, "SELECT COUNT(*) FROM outbox")
        for name in ("signal", "safety", "executor", "ledger")
    )
    dlq = {subject: service for subject, (_body, service) in HOSTILE.items()}
    violations = check_invariants(stack, stack.config.config_file, dlq)  # type: ignore[arg-type]
    RECORD.violations.extend(violations)
    assert RECORD.totals["orders filled"] > 0, "the workload must trade for the check to mean much"
    assert RECORD.totals["duplicates JetStream dropped"] > 0
    assert violations == []
    # The dead letters are the recorded messages of the hostile payloads.
    assert stream_messages(stack.config.admin_url, "TRANCHE_DLQ", "tranche.dlq.ledger")
