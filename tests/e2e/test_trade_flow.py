"""From an injected signal to a booked position, through four real processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from decimal import Decimal

import httpx
import nats
import pytest

from shared.contracts import SignalEvaluation
from tests.e2e.conftest import get_json, position_of, publish, stream_messages, ticker, wait_for
from tranche.stack import EmbeddedStack

pytestmark = pytest.mark.e2e


def test_a_bare_nats_pub_signal_becomes_a_position(stack: EmbeddedStack) -> None:
    url = stack.config.admin_url
    ticker(url, "0.09")
    started = time.monotonic()
    # As the operator, as the README's `nats pub` line does: its user may inject signals.
    operator = stack.config.nats_url_as("operator")
    publish(operator, "tranche.signals.inject.flow-bare", b'{"side":"buy","temperature":80}')
    position = wait_for(position_of(stack, "flow-bare"), what="a position for flow-bare")
    latency = time.monotonic() - started
    print(f"\ninject -> booked position: {latency * 1000:.0f} ms")

    # 0.01 BTC at 0.09 buys 0.11111111 ETH (rounded down), with a 0.6 % fee in BTC.
    assert Decimal(position["quantity"]) == Decimal("0.11111111")
    assert Decimal(position["average_entry_price"]) == Decimal("0.09")
    assert position["mode"] == "mock" and len(position["tranches"]) == 1
    decisions = get_json(f"{stack.config.url('safety')}/decisions?limit=100")
    mine = [d for d in decisions if d["bot_id"] == "flow-bare"]
    assert len(mine) == 1 and mine[0]["approved"]

    metrics = httpx.get(f"{stack.config.url('ledger')}/metrics", timeout=5).text
    assert 'tranche_ledger_fills_booked_total{mode="mock"}' in metrics
    assert "faststream_received_messages_total" in metrics

    status = subprocess.run(
        [sys.executable, "-m", "tranche", "status", "--json"]
        + [f"--url={name}={stack.config.url(name)}" for name in stack.config.ports],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert all(service["ready"] for service in shown["services"].values())
    (listed,) = [p for p in shown["positions"] if p["bot_id"] == "flow-bare"]
    assert listed["quantity"] == position["quantity"]


def test_tranche_signal_trades_and_a_second_buy_adds_a_tranche(stack: EmbeddedStack) -> None:
    url = stack.config.admin_url
    ticker(url, "0.09")
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith("TRANCHE_NATS_")}

    def cli_signal(side: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "tranche", "signal", "flow-cli", side,
             "--nats-url", stack.config.nats_url],
            # The operator's password from where `tranche up` writes it, as a user's shell has it.
            env={**cli_env, "TRANCHE_DATA_DIR": str(stack.config.data_dir)},
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "stored in TRANCHE_SIGNALS" in cli_signal("buy")
    wait_for(position_of(stack, "flow-cli"), what="first tranche")
    # The next buy inside the 5-minute entry cooldown (event time) is rejected with its reason.
    ticker(url, "0.1", after=timedelta(minutes=2))
    cli_signal("buy")

    def rejection() -> list[dict] | None:
        decisions = get_json(f"{stack.config.url('safety')}/decisions?limit=200") or []
        return [d for d in decisions if d["bot_id"] == "flow-cli" and not d["approved"]] or None

    (rejected,) = wait_for(rejection, what="a rejection")
    assert [r["code"] for r in rejected["reasons"]] == ["ENTRY_COOLDOWN"]
    # Ten event minutes later the add goes through: two tranches, average entry between.
    ticker(url, "0.1", after=timedelta(minutes=8))
    cli_signal("buy")

    def two_tranches() -> dict | None:
        found = position_of(stack, "flow-cli")()
        return found if found and len(found["tranches"]) == 2 else None

    position = wait_for(two_tranches, what="a second tranche")
    assert Decimal("0.09") < Decimal(position["average_entry_price"]) < Decimal("0.1")
    intents = stream_messages(url, "TRANCHE_INTENTS", "tranche.intents.flow-cli")
    assert [json.loads(m.data)["action"] for m in intents] == ["entry", "add", "add"]


def test_an_injected_signal_waits_for_n_evaluations_and_t_seconds(stack: EmbeddedStack) -> None:
    """Unconfirmed injections go through the bot's confirmation; every evaluation says how far
    it got (count and the event time held since), and only the one past both N and T acts."""
    at = ticker(stack.config.admin_url, "0.09")
    bot = "confirm-timer"

    async def evaluation_of(offset_s: int) -> SignalEvaluation:
        nc = await nats.connect(stack.config.nats_url_as("operator"))
        try:
            heard = await nc.subscribe(f"tranche.signals.evaluated.{bot}")
            when = (at + timedelta(seconds=offset_s)).isoformat()
            body = f'{{"side":"buy","temperature":80,"time":"{when}"}}'
            await nc.publish(f"tranche.signals.inject.{bot}", body.encode())
            return SignalEvaluation.model_validate_json((await heard.next_msg(timeout=30)).data)
        finally:
            await nc.close()

    first = asyncio.run(evaluation_of(0))
    assert (first.confirmations, first.confirmations_needed, first.confirm_seconds) == (1, 2, 60)
    assert first.confirming_since == at and first.intent_id is None
    second = asyncio.run(evaluation_of(30))  # two evaluations, but only 30 s held
    assert second.confirmations == 2 and second.confirming_since == at
    assert second.intent_id is None
    third = asyncio.run(evaluation_of(61))
    assert third.reason.code == "CONFIRMED" and third.intent_id is not None
