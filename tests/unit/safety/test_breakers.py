"""Circuit breakers: losing streaks, realized losses, order failures; the stricter state wins."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.safety.breakers import (
    BreakerLimits,
    ExitResult,
    all_bots_trips,
    bot_trips,
    stricter,
)

D = Decimal
T0 = datetime(2018, 1, 20, tzinfo=UTC)
LIMITS = BreakerLimits()


def exits(*pnls: str, start: datetime = T0) -> list[ExitResult]:
    return [ExitResult(start + timedelta(hours=i), D(p)) for i, p in enumerate(pnls)]


def trip_codes(results, failures=(), limits=LIMITS, now=T0 + timedelta(hours=10)) -> list[str]:
    return [t.code for t in bot_trips("bot-1", results, list(failures), limits, now)]


@pytest.mark.parametrize(
    ("pnls", "expected"),
    [
        (("-1", "-1"), []),
        (("-1", "-1", "-1"), ["LOSING_STREAK"]),
        (("-1", "-1", "1"), []),
        (("1", "-1", "-1", "-1"), ["LOSING_STREAK"]),
        (("-1", "-1", "0", "-1"), []),
    ],
)
def test_losing_exits_in_a_row(pnls: tuple[str, ...], expected: list[str]) -> None:
    assert trip_codes(exits(*pnls)) == expected


def test_daily_and_weekly_loss_per_bot_count_realized_pnl_in_their_window() -> None:
    limits = replace(
        LIMITS, losing_exits_in_a_row=None, daily_loss_per_bot=D(5), weekly_loss_per_bot=D(10)
    )
    now = T0 + timedelta(days=3)
    old = [ExitResult(T0, D(-4))]  # inside the week, outside the day
    today = [ExitResult(now - timedelta(hours=2), D(-3)), ExitResult(now, D(-2.5))]
    assert trip_codes(old + today, limits=limits, now=now) == ["DAILY_LOSS"]
    more = [*old, ExitResult(now - timedelta(hours=30), D(-1)), *today]
    assert trip_codes(more, limits=limits, now=now) == ["DAILY_LOSS", "WEEKLY_LOSS"]
    assert trip_codes(old, limits=limits, now=now) == []


def test_a_gain_offsets_a_loss_on_the_day() -> None:
    limits = replace(LIMITS, losing_exits_in_a_row=None, daily_loss_per_bot=D(5))
    assert trip_codes(exits("-4", "3", "-3"), limits=limits) == []


def test_order_failures_in_a_window() -> None:
    now = T0 + timedelta(hours=10)
    recent = [now - timedelta(minutes=m) for m in (1, 20, 40)]
    assert trip_codes([], recent) == ["ORDER_FAILURES"]
    assert trip_codes([], [*recent[:2], now - timedelta(hours=2)]) == []


def test_a_trip_resets_after_its_documented_time_in_event_time() -> None:
    now = T0 + timedelta(hours=10)
    (trip,) = bot_trips("bot-1", exits("-1", "-1", "-1"), [], LIMITS, now)
    assert trip.state == "reducing" and trip.resets_at == now + timedelta(hours=24)
    manual = replace(LIMITS, reset_after=None, trip_to="halted")
    (trip,) = bot_trips("bot-1", exits("-1", "-1", "-1"), [], manual, now)
    assert trip.state == "halted" and trip.resets_at is None


def test_the_all_bots_daily_loss_is_off_unless_set() -> None:
    results = exits("-10", "-10")
    assert all_bots_trips(results, LIMITS, T0 + timedelta(hours=2)) == []
    (trip,) = all_bots_trips(
        results, replace(LIMITS, daily_loss_all_bots=D(15)), T0 + timedelta(hours=2)
    )
    assert trip.code == "DAILY_LOSS_ALL_BOTS" and trip.bot_id is None


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("active", "reducing", "reducing"),
        ("halted", "reducing", "halted"),
        ("active", "active", "active"),
    ],
)
def test_the_stricter_state_applies(a, b, expected) -> None:
    assert stricter(a, b) == expected and stricter(b, a) == expected


def test_a_trip_says_its_amounts_in_plain_decimals() -> None:
    """Realized P&L carries many places; the trader reads the loss as it is, not as
    -0.000274110829946200000000000000 or -2.741E-4."""
    results = exits("-0.0001000000000000000000", "-0.0000741108299462", "-0.0001")
    (trip,) = bot_trips("bot-1", results, [], LIMITS, T0 + timedelta(hours=10))
    assert trip.message == "bot bot-1 lost on 3 exits in a row (-0.0002741108299462 in all)"
