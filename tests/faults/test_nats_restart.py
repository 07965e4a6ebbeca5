"""The NATS server killed with kill -9 and restarted on its JetStream data: the services
reconnect by themselves, nothing in flight is lost, and trading goes on."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.conftest import get_json, position_of, publish, stream_messages, ticker, wait_for
from tranche.stack import EmbeddedStack

pytestmark = pytest.mark.e2e


def all_ready(stack: EmbeddedStack) -> bool:
    for name in stack.config.ports:
        try:
            if httpx.get(stack.config.url(name) + "/ready", timeout=2).status_code != 200:
                return False
        except httpx.HTTPError:
            return False
    return True


def test_a_killed_nats_server_comes_back_and_loses_nothing(stack: EmbeddedStack) -> None:
    url = stack.config.admin_url
    ticker(url, "0.09")
    publish(url, "tranche.signals.inject.nats-1", b'{"side":"buy"}')
    # kill -9 while the signal may still be on its way through the services
    time.sleep(0.05)
    stack.stop_nats(kill=True)
    wait_for(lambda: not all_ready(stack), timeout=30, what="the services to notice")
    time.sleep(1)
    stack.start_nats()
    wait_for(lambda: all_ready(stack), timeout=60, what="every service to reconnect")

    wait_for(position_of(stack, "nats-1"), what="the position of the signal sent before the kill")
    ticker(url, "0.09")
    publish(url, "tranche.signals.inject.nats-2", b'{"side":"buy"}')
    wait_for(position_of(stack, "nats-2"), what="a position after the restart")
    # Exactly once: one intent, one order, one fill for the signal that straddled the kill.
    assert len(stream_messages(url, "TRANCHE_INTENTS", "tranche.intents.nats-1")) == 1
    orders = get_json(stack.config.url("executor") + "/orders?limit=1000")
    assert len([o for o in orders if o["bot_id"] == "nats-1"]) == 1
    assert len(get_json(stack.config.url("ledger") + "/fills?bot_id=nats-1")) == 1
