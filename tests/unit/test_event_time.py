"""Event times that cannot wedge anything (issue 14, item 5): a time far ahead of the newest
accepted one for its product, or of the clock, is refused with a reason; no wire time is so far
out that time arithmetic on it overflows; a bad replay row names its file, row and field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.signal.feeds.replay import ReplayError, read_ticks
from shared.bus import InvalidMessage
from shared.contracts import Fill, Ticker
from shared.eventtime import NewestTimes, TimeBounds, refuse_time

T0 = datetime(2018, 1, 20, 12, 0, tzinfo=UTC)
BOUNDS = TimeBounds(ahead_of_newest=timedelta(hours=1), ahead_of_clock=timedelta(minutes=5))


def test_a_ticker_dated_9999_is_refused_by_the_contract() -> None:
    with pytest.raises(ValidationError, match="year"):
        Ticker(product_id="ETH-BTC", price=Decimal(1), time=datetime(9999, 12, 31, tzinfo=UTC))


def test_a_fill_dated_before_1970_is_refused_by_the_contract() -> None:
    with pytest.raises(ValidationError, match="year"):
        Fill(trade_id="t", price=Decimal(1), size=Decimal(1), fee=Decimal(0),
             time=datetime(1, 1, 1, tzinfo=UTC))  # fmt: skip


@pytest.mark.parametrize(
    ("time", "newest", "now", "code"),
    [
        (T0, None, None, None),
        (T0 + timedelta(minutes=59), T0, None, None),
        (T0 + timedelta(hours=2), T0, None, "EVENT_TIME_JUMP"),
        (T0 - timedelta(days=300), T0, None, None),  # older is no jump: the caller ignores it
        (T0 + timedelta(minutes=4), None, T0, None),
        (T0 + timedelta(minutes=6), None, T0, "EVENT_TIME_AHEAD"),
        (datetime(2999, 12, 31, tzinfo=UTC), T0, T0, "EVENT_TIME_AHEAD"),
        (datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC), None,
         "EVENT_TIME_JUMP"),  # never an OverflowError
    ],
)  # fmt: skip
def test_a_time_too_far_ahead_is_refused(time, newest, now, code) -> None:
    reason = refuse_time(time, newest, now, BOUNDS)
    assert (reason.code if reason else None) == code
    if reason:
        assert "ahead" in reason.message


def test_newest_times_keep_the_newest_accepted_and_refuse_a_jump_from_it() -> None:
    times = NewestTimes(BOUNDS, clock=None)
    times.admit("ETH-BTC", T0, "ticker")
    times.admit("ETH-BTC", T0 - timedelta(minutes=1), "ticker")  # older: admitted, not newest
    with pytest.raises(InvalidMessage) as refused:
        times.admit("ETH-BTC", T0 + timedelta(days=30), "ticker")
    assert refused.value.reasons[0].code == "EVENT_TIME_JUMP"
    times.admit("ETH-BTC", T0 + timedelta(minutes=30), "ticker")  # the real tick still counts
    times.admit("XRP-ETH", T0 + timedelta(days=30), "ticker")  # another product, its own newest
    assert times.newest("ETH-BTC") == T0 + timedelta(minutes=30)


def test_newest_times_refuse_a_time_ahead_of_the_clock() -> None:
    times = NewestTimes(BOUNDS, clock=lambda: T0)
    with pytest.raises(InvalidMessage) as refused:
        times.admit("ETH-BTC", T0 + timedelta(hours=1), "ticker")
    assert refused.value.reasons[0].code == "EVENT_TIME_AHEAD"
    assert times.newest("ETH-BTC") is None


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ("9999-12-31T00:00:00Z,1,1,1,abc,1", "close"),
        ("9999-12-31T00:00:00Z,1,1,1,0.5,1", "time"),
        ("2018-01-20T04:55:00Z,1,1,1,-5,1", "close"),
        ("yesterday,1,1,1,0.5,1", "time"),
        ("2018-02-20T04:55:00Z,1,1,1,0.5,1", "time"),  # a month after the row before it
    ],
)
def test_a_bad_replay_row_names_the_file_row_and_field(tmp_path: Path, row: str, field) -> None:
    path = tmp_path / "ETH-BTC-1m.csv"
    path.write_text(
        "time,open,high,low,close,volume\n2018-01-20T04:54:00Z,1,1,1,0.5,1\n" + row + "\n"
    )
    with pytest.raises(ReplayError) as error:
        list(read_ticks(path, "ETH-BTC"))
    message = str(error.value)
    assert "ETH-BTC-1m.csv" in message and "row 3" in message and f"field {field}" in message
    assert "\n" not in message


def test_the_dashboard_does_not_draw_a_tick_far_ahead_of_the_newest() -> None:
    from services.dashboard.board import Board

    board = Board()
    for price, at in (("10", T0), ("99", T0 + timedelta(days=30)), ("11", T0 + timedelta(hours=1))):
        body = {"product_id": "ETH-BTC", "price": price, "time": at.isoformat()}
        board.apply("tranche.market.ticker.ETH-BTC", json.dumps(body).encode())
    assert board.prices["ETH-BTC"] == Decimal("11") and board.invalid_messages == 1
    assert "ahead" in (board.last_invalid or "")
