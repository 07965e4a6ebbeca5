"""kill -9 of each service in turn, and of two at once, while signals flow: after a restart
every intent is decided once, every approval ends in one final order, every fill is booked once."""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.conftest import get_json, publish, stream_messages, ticker, wait_for
from tranche.stack import EmbeddedStack

pytestmark = pytest.mark.e2e

CASES = ["signal", "safety", "executor", "ledger", "safety+executor"]


@pytest.mark.parametrize("victims", CASES)
def test_killed_services_finish_what_they_started(stack: EmbeddedStack, victims: str) -> None:
    url = stack.config.nats_url
    bots = [f"k9-{victims.replace('+', '-')}-{n}" for n in range(1, 6)]
    ticker(url, "0.09")
    for n, bot in enumerate(bots):
        publish(url, f"tranche.signals.inject.{bot}", b'{"side":"buy"}')
        if n == 1:
            for victim in victims.split("+"):
                stack.stop_service(victim, kill=True)
    time.sleep(1)  # a pause before the restart, as a crashed pod would have
    for victim in victims.split("+"):
        stack.start_service(victim, move_if_taken=True)
    for victim in victims.split("+"):
        stack.wait_ready(victim)

    def every_bot_booked() -> list[dict] | None:
        views = get_json(stack.config.url("ledger") + "/positions") or []
        open_ = [v for v in views if v["position"]["bot_id"] in bots]
        open_ = [v for v in open_ if v["position"]["status"] == "open"]
        return open_ if len(open_) == len(bots) else None

    wait_for(every_bot_booked, timeout=90, what=f"all five positions after killing {victims}")
    decisions = get_json(stack.config.url("safety") + "/decisions?limit=1000")
    orders = get_json(stack.config.url("executor") + "/orders?limit=1000")
    for bot in bots:
        intents = stream_messages(url, "TRANCHE_INTENTS", f"tranche.intents.{bot}")
        assert len({json.loads(m.data)["intent_id"] for m in intents}) == 1, bot
        assert len([d for d in decisions if d["bot_id"] == bot]) == 1, bot
        mine = [o for o in orders if o["bot_id"] == bot]
        assert len(mine) == 1 and mine[0]["status"] == "filled", (bot, mine)
        assert len(get_json(stack.config.url("ledger") + f"/fills?bot_id={bot}")) == 1, bot
