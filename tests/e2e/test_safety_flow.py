"""Safety in the running stack: the kill switch from the CLI and over HTTP, flatten, and the
audit trail, with intents that travel to a position through all four services."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import datetime, timedelta
from decimal import Decimal

import httpx
import nats
import pytest

from shared.contracts import Reason, TradeIntent
from tests.e2e.conftest import get_json, publish, stream_messages, ticker, wait_for
from tranche.safety_cli import register
from tranche.stack import EmbeddedStack

pytestmark = pytest.mark.e2e
BOT = "safety-e2e"  # not in bots.toml: these intents come straight from the test, not a signal


def tranche(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """What ``tranche <argv>`` does once cli.py registers the safety commands."""
    root = argparse.ArgumentParser(prog="tranche")
    register(root.add_subparsers(dest="command", required=True))
    args = root.parse_args(argv)
    code = args.run(args)
    return code, capsys.readouterr().out


def send_intent(url: str, n: int, action: str, at: datetime, price: str) -> str:
    intent_id = f"{BOT}-{n}"
    sizes = {"base_size": Decimal("5")} if action == "exit" else {"quote_size": Decimal("0.01")}
    intent = TradeIntent(
        message_id=intent_id, correlation_id=intent_id, time=at, intent_id=intent_id,
        signal_id=f"s-{intent_id}", bot_id=BOT, product_id="ETH-BTC", action=action,
        side="sell" if action == "exit" else "buy", temperature=Decimal(80), band="hot",
        reason=Reason(code="SIGNAL", message="e2e"), reference_price=Decimal(price),
        market_time=at, **sizes,
    )  # fmt: skip
    publish(url, f"tranche.intents.{BOT}", intent.model_dump_json().encode())
    return intent_id


def bucket_position(url: str, tranches: int = 1):
    """The ledger's position from the ``tranche_positions`` bucket, once it has ``tranches``
    (the ledger's HTTP API only answers for bots in its bots file; the bucket has every bot)."""

    async def read() -> dict | None:
        nc = await nats.connect(url)
        try:
            kv = await nc.jetstream().key_value("tranche_positions")
            entry = await kv.get(BOT)
            return json.loads(entry.value)
        except nats.js.errors.KeyNotFoundError:
            return None
        finally:
            await nc.close()

    def probe() -> dict | None:
        found = asyncio.run(read())
        return found if found and len(found["tranches"]) == tranches else None

    return probe


def decision(stack: EmbeddedStack, intent_id: str):
    def probe() -> dict | None:
        rows = get_json(f"{stack.config.url('safety')}/decisions?bot={BOT}&limit=100") or []
        return next((row for row in rows if row["intent_id"] == intent_id), None)

    return wait_for(probe, what=f"the decision on {intent_id}")


@pytest.mark.usefixtures("cli_trusts_stack")
def test_halt_resume_flatten_and_the_audit_trail(
    stack: EmbeddedStack, capsys: pytest.CaptureFixture[str]
) -> None:
    url = stack.config.admin_url
    cli = ("--nats-url", url)
    at = ticker(url, "0.09")
    assert decision(stack, send_intent(url, 1, "entry", at, "0.09"))["approved"]
    wait_for(bucket_position(url), what="the position")

    # Kill switch from the CLI: the next entry is refused with the operator's reason.
    code, out = tranche(capsys, "halt", BOT, "--reason", "e2e drill", *cli)
    assert code == 0 and out.startswith("HALT:")
    at = ticker(url, "0.08", after=timedelta(minutes=10))
    halted = decision(stack, send_intent(url, 2, "add", at, "0.08"))
    assert [r["code"] for r in halted["reasons"]] == ["HALTED"]
    assert "e2e drill" in halted["reasons"][0]["message"]

    # Over HTTP the switch needs the bearer token (the e2e stack sets none: always 401).
    answer = httpx.post(f"{stack.config.url('safety')}/resume", json={"bot_id": BOT}, timeout=5)
    assert answer.status_code == 401

    code, out = tranche(capsys, "resume", BOT, *cli)
    assert code == 0 and out.startswith("RESUME:")
    at = ticker(url, "0.08", after=timedelta(minutes=10))
    added = decision(stack, send_intent(url, 3, "add", at, "0.08"))
    assert added["approved"] and added["counters"]["bot_entries_hour"] == "1"

    held = wait_for(bucket_position(url, tranches=2), what="the second tranche")

    # Flatten: the bot goes to reducing, an entry is refused, the whole position may exit.
    # No signal runs this bot: the test sends the exit itself, so the command does not wait.
    code, out = tranche(capsys, "flatten", BOT, "--wait", "0", *cli)
    assert code == 0 and out.startswith("FLATTEN_REQUESTED:")
    at = ticker(url, "0.08", after=timedelta(minutes=10))
    refused = decision(stack, send_intent(url, 4, "add", at, "0.08"))
    assert [r["code"] for r in refused["reasons"]] == ["REDUCING"]
    exited = decision(stack, send_intent(url, 5, "exit", at, "0.08"))
    assert exited["approved"]
    assert [r["code"] for r in exited["adjustments"]] == ["EXIT_CUT_TO_POSITION"]
    assert held["quantity"] in exited["adjustments"][0]["message"]

    events = [
        json.loads(m.data) for m in stream_messages(url, "TRANCHE_SAFETY", "tranche.safety.events")
    ]
    mine = [(e["code"], e["state"]) for e in events if e.get("bot_id") == BOT]
    assert mine == [
        ("HALT", "halted"),
        ("RESUME", "active"),
        ("FLATTEN", "reducing"),
        ("FLATTEN_REQUESTED", "reducing"),
    ]

    code, out = tranche(capsys, "decisions", BOT, "--safety-url", stack.config.url("safety"))
    assert code == 0 and "HALTED: " in out and "REDUCING: " in out
    code, out = tranche(capsys, "resume", BOT, *cli)
    assert code == 0

    # Limits reset in mock mode; production is refused without the executor's opt-in.
    code, out = tranche(capsys, "limits", "reset", BOT, *cli)
    assert code == 0 and out.startswith("LIMITS_RESET:")
    code, out = tranche(capsys, "mode", "production", *cli)
    assert code == 1 and "TRANCHE_LIVE_TRADING_CONFIRMED" in out
