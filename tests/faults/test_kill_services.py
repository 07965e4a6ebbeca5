"""kill -9 of each service in turn, and of two at once, while signals flow: after a restart
every signal reaches a decision, every intent is decided once, every approval ends in one final
order, every fill is booked once."""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.conftest import get_json, publish, stream_messages, ticker, wait_for
from tranche.stack import EmbeddedStack

pytestmark = pytest.mark.e2e

CASES = ["signal", "safety", "executor", "ledger", "safety+executor"]
FINAL = {"filled", "cancelled", "expired", "failed"}
PRICE_REASONS = {"NO_MARKET_DATA"}


@pytest.mark.parametrize("victims", CASES)
def test_killed_services_finish_what_they_started(stack: EmbeddedStack, victims: str) -> None:
    url = stack.config.admin_url
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

    def every_bot_decided() -> list[dict] | None:
        decisions = get_json(stack.config.url("safety") + "/decisions?limit=1000") or []
        mine = [d for d in decisions if d["bot_id"] in bots]
        return mine if len({d["bot_id"] for d in mine}) == len(bots) else None

    # Nothing lost: every signal sent around the kill reaches a decision. (A restarted signal
    # service or executor has seen no price yet, so some may be refused for that: fail closed.)
    wait_for(every_bot_decided, timeout=90, what=f"a decision for all five after killing {victims}")
    time.sleep(2)  # let any late duplicate show itself
    decisions = get_json(stack.config.url("safety") + "/decisions?limit=1000")
    orders = get_json(stack.config.url("executor") + "/orders?limit=1000")

    approved = {d["bot_id"] for d in decisions if d["bot_id"] in bots and d["approved"]}

    def settled() -> bool:
        # An approval the killed executor received but never acked comes back after the ack
        # wait (60 s): until then it has no order, and "every order final" holds vacuously.
        current = get_json(stack.config.url("executor") + "/orders?limit=1000")
        placed = {o["bot_id"] for o in current}
        mine = [o for o in current if o["bot_id"] in bots]
        return approved <= placed and all(o["status"] in FINAL for o in mine)

    wait_for(settled, timeout=120, what="an order for every approval, each final")
    orders = get_json(stack.config.url("executor") + "/orders?limit=1000")
    for bot in bots:
        intents = stream_messages(url, "TRANCHE_INTENTS", f"tranche.intents.{bot}")
        assert len({json.loads(m.data)["intent_id"] for m in intents}) == 1, bot
        (decision,) = [d for d in decisions if d["bot_id"] == bot]
        mine = [o for o in orders if o["bot_id"] == bot]
        assert len(mine) == (1 if decision["approved"] else 0), (bot, mine)
        filled = [o for o in mine if o["status"] == "filled"]
        fills = get_json(stack.config.url("ledger") + f"/fills?bot_id={bot}") or []
        assert len(fills) == len(filled), (bot, fills, filled)  # every fill booked once
        if not decision["approved"]:
            assert {r["code"] for r in decision["reasons"]} <= PRICE_REASONS, decision
    if victims in ("safety", "ledger"):
        # Neither needs a price to do its work: every signal must have become a position.
        assert all(o["status"] == "filled" for o in orders if o["bot_id"] in bots) and len(
            [o for o in orders if o["bot_id"] in bots]
        ) == len(bots)
