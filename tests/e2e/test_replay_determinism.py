"""Issue 7: replaying the bundled real data through the running services twice gives identical
intents, decisions, order events (fills) and positions, and the same P&L, cent for cent.

Each run is a fresh embedded stack (its own NATS, SQLite files and ports) started by the same code
as ``tranche replay``; the two journals (every durable message of the run, read back from the
streams) must be equal message for message. ``tests/unit/test_journal.py`` shows the comparison
finds a difference as small as one satoshi or one minute.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from tranche.journal import differences
from tranche.replay import replay_stack, run_replay, slice_rows
from tranche.stack import ROOT

pytestmark = pytest.mark.e2e

BOT = "eth-btc-momentum"
ROWS = 2000  # 2018-01-20 04:53 to 2018-01-21 14:12: entries, adds, exits, a tripped breaker
TIMING_CODES = {"ORDER_IN_FLIGHT", "POSITION_UNKNOWN"}  # what a too-early next tick would cause


def test_two_replays_of_the_same_data_are_the_same_run_cent_for_cent(tmp_path: Path) -> None:
    data = tmp_path / "ETH-BTC-1m.csv"
    assert slice_rows(ROOT / "data" / "ETH-BTC-1m.csv", data, rows=ROWS) == ROWS
    quiet = Console(quiet=True)
    first, second = (
        run_replay(
            replay_stack(data, "ETH-BTC", tmp_path / f"run-{n}", settle_timeout_s=90),
            "ETH-BTC",
            timeout=240,
            console=quiet,
        )
        for n in (1, 2)
    )
    assert differences(first["journal"], second["journal"]) == []
    assert first["fingerprint"] == second["fingerprint"]
    assert first["bots"] == second["bots"] and first["summary"] == second["summary"]
    assert_the_readme_example_is_this_run(first)

    # The runs did something worth comparing: every kind of message, fills, realized P&L.
    journal = first["journal"]
    assert {
        f"{kind} {BOT}" for kind in ("intent", "approved", "rejected", "order", "position")
    } <= set(journal)
    (bot,) = [b for b in first["bots"] if b["bot_id"] == BOT]
    assert bot["fills"] >= 5 and Decimal(bot["realized_pnl"]) != 0
    assert first["ticks"] == ROWS and first["evaluations"] == ROWS - 1  # no tick lost
    # Lock step means no decision saw the pipeline half-way: no in-flight or stale-position
    # rejection (a barrier that let a tick through too early would show up here).
    codes = {r["code"] for m in journal[f"rejected {BOT}"] for r in m["reasons"]}
    assert not codes & TIMING_CODES, codes
    # Every fill is at the price of the intent behind it (the mock fills at the intent's price).
    intents = {m["intent_id"]: m for m in journal[f"intent {BOT}"]}
    for event in journal[f"order {BOT}"]:
        for fill in event["fills"]:
            assert fill["price"] == intents[event["intent_id"]]["reference_price"]
            assert fill["time"] == intents[event["intent_id"]]["market_time"]


def assert_the_readme_example_is_this_run(run: dict) -> None:
    """The README shows ``tranche replay data/ETH-BTC-1m.csv --rows 2000``: its fingerprint and
    figures must be what this same replay gives (they drifted once)."""
    blocks, block, inside = [], [], False
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            if inside:
                blocks.append("\n".join(block))
            block, inside = [], not inside
        elif inside:
            block.append(line)
    example = next(text for text in blocks if "fingerprint" in text and " ticks, " in text)
    fingerprint = re.search(r"fingerprint (\w+)", example)
    assert fingerprint is not None, "the README's replay example lost its fingerprint"
    assert fingerprint[1] == run["fingerprint"], "README: update the replay example"
    counts = re.search(r"(\d+) ticks, (\d+) evaluations", example)
    assert counts is not None
    assert (int(counts[1]), int(counts[2])) == (run["ticks"], run["evaluations"])
    (bot,) = [b for b in run["bots"] if b["bot_id"] == BOT]
    row = next(line for line in example.splitlines() if f" {BOT} " in line)
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells == [
        BOT, str(bot["fills"]), str(bot["approved"]), str(bot["rejected"]),
        bot["realized_pnl"], bot["unrealized_pnl"], bot["open_quantity"], bot["fees_paid"],
    ]  # fmt: skip
