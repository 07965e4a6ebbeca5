"""Bad input, a killed ledger, a crash between commit and publish: nothing lost, nothing twice."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from shared.contracts import DeadLetter
from tests.e2e.conftest import get_json, position_of, publish, stream_messages, ticker, wait_for
from tranche.stack import EmbeddedStack

pytestmark = pytest.mark.e2e


def dead_letters(stack: EmbeddedStack, service: str) -> list[dict]:
    found = stream_messages(stack.config.admin_url, "TRANCHE_DLQ", f"tranche.dlq.{service}")
    return [json.loads(message.data) for message in found]


def test_malformed_payloads_reach_the_dlq_with_reasons_and_trading_goes_on(
    stack: EmbeddedStack,
) -> None:
    url = stack.config.admin_url
    bad = {
        b"not json": "NOT_JSON",
        b'{"side":"buy","leverage":10}': "UNKNOWN_FIELD",
        b'{"side":"hold"}': "INVALID_FIELD",
        b'{"temperature":80}': "MISSING_FIELD",
        b'{"side":"buy","temperature":"hot"}': "INVALID_FIELD",
        b'{"side":"buy"\xff\xfe}': "NOT_JSON",
    }
    for payload in bad:
        publish(url, "tranche.signals.inject.dlq-bot", payload)
    publish(url, "tranche.signals.inject.no-such-bot", b'{"side":"buy"}')
    # A float where a decimal string belongs, on the ledger's input.
    publish(
        url,
        "tranche.orders.events.dlq-bot",
        json.dumps({"message_id": "x", "fills": [{"price": 0.09}]}).encode(),
    )

    letters = wait_for(
        lambda: (found := dead_letters(stack, "signal")) and len(found) >= 8 and found,
        what="eight dead letters from signal (the seven injections and the order event)",
    )
    by_payload = {DeadLetter.model_validate(letter).raw_payload(): letter for letter in letters}
    for payload, code in bad.items():
        letter = by_payload[payload]
        assert letter["subject"] == "tranche.signals.inject.dlq-bot"
        assert code in [reason["code"] for reason in letter["reasons"]], letter
    assert "UNKNOWN_BOT" in [r["code"] for r in by_payload[b'{"side":"buy"}']["reasons"]]
    ledger_letters = wait_for(lambda: dead_letters(stack, "ledger"), what="a ledger dead letter")
    assert any(
        r["code"] in ("INVALID_FIELD", "MISSING_FIELD") for r in ledger_letters[0]["reasons"]
    )
    assert any("decimal string" in r["message"] for r in ledger_letters[0]["reasons"])

    # Nothing was redelivered forever, every service still runs, and a valid signal still trades.
    ticker(url, "0.09")
    publish(url, "tranche.signals.inject.dlq-bot", b'{"side":"buy"}')
    wait_for(position_of(stack, "dlq-bot"), what="a position after the bad input")
    for name in stack.config.ports:
        assert httpx.get(stack.config.url(name) + "/ready", timeout=5).status_code == 200
    signal_letters = dead_letters(stack, "signal")
    # The seven injections, and the float order event: the signal reads order events too (a stop
    # on the exchange that ended is asked again), so it refuses that one as well. Nothing more.
    assert sorted(letter["subject"] for letter in signal_letters) == [
        "tranche.orders.events.dlq-bot",
        *["tranche.signals.inject.dlq-bot"] * 6,
        "tranche.signals.inject.no-such-bot",
    ]


def test_killing_the_ledger_mid_flow_loses_no_fill(stack: EmbeddedStack) -> None:
    url = stack.config.admin_url
    bots = [f"kill-{n}" for n in range(1, 11)]
    ticker(url, "0.09")
    for n, bot in enumerate(bots):
        publish(url, f"tranche.signals.inject.{bot}", b'{"side":"buy"}')
        if n == 3:
            stack.stop_service("ledger", kill=True)  # kill -9 while signals flow
    stack.start_service("ledger", move_if_taken=True)
    stack.wait_ready("ledger")

    def all_booked() -> list[dict] | None:
        views = get_json(stack.config.url("ledger") + "/positions") or []
        mine = [v for v in views if v["position"]["bot_id"] in bots]
        mine = [v for v in mine if v["position"]["status"] == "open"]
        return mine if len(mine) == len(bots) else None

    wait_for(all_booked, timeout=60, what="all ten positions after the ledger restart")
    orders = get_json(stack.config.url("executor") + "/orders?limit=1000")
    filled = [o for o in orders if o["bot_id"] in bots and o["status"] == "filled"]
    assert len(filled) == len(bots)
    for bot in bots:
        fills = get_json(stack.config.url("ledger") + f"/fills?bot_id={bot}")
        assert len(fills) == 1, f"{bot}: {fills}"


def test_a_crash_between_commit_and_publish_still_sends_the_intent_once(
    stack: EmbeddedStack,
) -> None:
    url = stack.config.admin_url
    stack.restart_service("signal", env={"TRANCHE_FAULT": "crash_before_publish"})
    ticker(url, "0.09")
    publish(url, "tranche.signals.inject.crash-bot", b'{"side":"buy"}')
    process = stack.services["signal"]
    assert wait_for(lambda: process.poll(), what="the signal service to crash") == 86
    # The intent is committed in the signal store but was never published.
    assert stream_messages(url, "TRANCHE_INTENTS", "tranche.intents.crash-bot") == []

    stack.config.service_env["signal"] = {}
    stack.start_service("signal", move_if_taken=True)
    stack.wait_ready("signal")
    wait_for(position_of(stack, "crash-bot"), what="the position after the restart")
    # Redelivered (it was never acknowledged) and re-published from the outbox: still one intent,
    # one decision, one order.
    time.sleep(1.5)
    intents = stream_messages(url, "TRANCHE_INTENTS", "tranche.intents.crash-bot")
    assert len(intents) == 1
    orders = get_json(stack.config.url("executor") + "/orders?limit=1000")
    assert len([o for o in orders if o["bot_id"] == "crash-bot"]) == 1
