"""Comparing two runs: the journal groups what they published, and any difference shows."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tranche.journal import differences, fingerprint, group
from tranche.replay import parse_utc, slice_rows
from tranche.stack import StackError

BOT = "eth-btc-momentum"


def run(decided_at: str = "2026-11-26T17:00:00.123Z") -> dict:
    """A small journal as a replay publishes it."""
    approved = {
        "message_id": "decision-i-1", "intent": {"bot_id": BOT, "intent_id": "i-1"},
        "client_order_id": "c-1", "time": "2018-01-20T12:00:00Z",
        "decided_at": decided_at,
    }  # fmt: skip
    filled = {
        "message_id": "order-c-1-filled", "bot_id": BOT, "status": "filled",
        "fills": [{"trade_id": "t-1", "price": "0.09", "size": "0.1", "fee": "0.000054"}],
    }  # fmt: skip
    other = {"message_id": "order-c-9-filled", "bot_id": "xrp-eth-momentum", "status": "filled"}
    position = {"message_id": "position-1", "bot_id": BOT, "realized_pnl": "-0.0001"}
    return (
        group("approved", [approved])
        | group("order", [filled, other])
        | group("position", [position])
    )


def test_the_same_run_has_no_differences_and_the_same_fingerprint() -> None:
    assert differences(run(), run()) == []
    assert fingerprint(run()) == fingerprint(run())


def test_when_safety_happened_to_decide_is_not_part_of_the_run() -> None:
    first, second = run(), run(decided_at="2026-11-26T18:00:00Z")
    assert "decided_at" not in first[f"approved {BOT}"][0]
    assert differences(first, second) == [] and fingerprint(first) == fingerprint(second)


@pytest.mark.parametrize(
    ("key", "change", "said"),
    [
        (f"order {BOT}", lambda m: m["fills"][0].update(price="0.0901"), "fills"),
        (f"position {BOT}", lambda m: m.update(realized_pnl="-0.00010001"), "realized_pnl"),
        (f"approved {BOT}", lambda m: m.update(time="2018-01-20T12:01:00Z"), "time"),
    ],
)
def test_a_difference_of_one_satoshi_or_one_minute_is_found_and_named(key, change, said) -> None:
    first, second = run(), run()
    change(second[key][0])
    found = differences(first, second)
    assert len(found) == 1 and found[0].startswith(f"{key} #1") and said in found[0]
    assert fingerprint(first) != fingerprint(second)


def test_a_missing_or_extra_message_is_found() -> None:
    first, second = run(), run()
    second[f"order {BOT}"].append(copy.deepcopy(second[f"order {BOT}"][0]))
    del second[f"position {BOT}"]
    assert differences(first, second) == [
        f"order {BOT}: 1 messages against 2",
        f"position {BOT}: 1 messages against 0",
    ]


def test_messages_are_grouped_per_bot_so_two_bots_may_interleave() -> None:
    journal = run()
    assert [m["message_id"] for m in journal["order xrp-eth-momentum"]] == ["order-c-9-filled"]
    assert [m["message_id"] for m in journal[f"order {BOT}"]] == ["order-c-1-filled"]


CANDLES = "time,open,high,low,close,volume\n" + "".join(
    f"2018-01-20T00:0{n}:00Z,1,1,1,1.{n},1\n" for n in range(6)
)


def test_a_slice_keeps_the_header_and_the_rows_between_start_and_end(tmp_path: Path) -> None:
    source, target = tmp_path / "ETH-BTC-1m.csv", tmp_path / "slice.csv"
    source.write_text(CANDLES)
    start, end = parse_utc("2018-01-20T00:01:00"), parse_utc("2018-01-20T00:04:00Z")
    assert slice_rows(source, target, start=start, end=end) == 3
    lines = target.read_text().splitlines()
    assert lines[0] == "time,open,high,low,close,volume"
    assert [line.split(",")[4] for line in lines[1:]] == ["1.1", "1.2", "1.3"]
    assert slice_rows(source, target, start=start, rows=2) == 2
    assert start == datetime(2018, 1, 20, 0, 1, tzinfo=UTC)


def test_a_file_without_a_time_column_cannot_be_sliced(tmp_path: Path) -> None:
    source = tmp_path / "x.csv"
    source.write_text("price\n1\n")
    with pytest.raises(StackError, match="no time column"):
        slice_rows(source, tmp_path / "slice.csv", rows=1)
