"""One order's poll schedule: every outcome but a change backs off, a past time-to-live never
makes a poll due at once, the cancel has its own schedule, and the request budget holds."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.executor.config import ExecutorSettings
from services.executor.polling import Due, RequestBudget, backoff
from services.executor.protective import STOP, poll_cap_s
from services.executor.store import OrderRow

BASE, CAP = 1.0, 30.0


@pytest.mark.parametrize(
    ("previous", "changed", "expected"),
    [(None, False, 1.0), (1.0, False, 2.0), (16.0, False, 30.0), (30.0, False, 30.0),
     (8.0, True, 1.0)],
)  # fmt: skip
def test_the_interval_doubles_while_nothing_changes(
    previous: float | None, changed: bool, expected: float
) -> None:
    assert backoff(previous, changed, base_s=BASE, cap_s=CAP) == expected


def test_failing_polls_past_the_time_to_live_back_off_instead_of_looping() -> None:
    """Issue 17 item 2: a negative deadline once made the order due at once after each failure
    (926 polls in 82 s with a revoked key)."""
    due, now, polls = Due(0), 0.0, 0
    while now < 82:
        polls += 1
        due.after_poll(now, changed=False, base_s=BASE, cap_s=CAP, ttl_in_s=-5.0)
        assert due.at > now
        now = due.at
    assert polls <= 10  # 1, 2, 4, 8, 16, 30, 30 ... seconds apart


def test_a_time_to_live_still_ahead_brings_the_poll_forward() -> None:
    due = Due(0, interval_s=16.0)
    due.after_poll(100.0, changed=False, base_s=BASE, cap_s=CAP, ttl_in_s=3.0)
    assert due.at == 103.0 and due.interval_s == 30.0


def test_retry_after_is_never_undercut_and_never_past_the_cap() -> None:
    due = Due(0)
    due.after_poll(0.0, changed=False, base_s=BASE, cap_s=CAP, retry_after_s=7.0)
    assert due.at == 7.0
    due.after_poll(7.0, changed=False, base_s=BASE, cap_s=CAP, retry_after_s=600.0)
    assert due.at == 37.0


def test_the_cancel_backs_off_on_its_own_and_pulls_the_next_poll_forward() -> None:
    due = Due(0, interval_s=30.0, cancel_at=0.0)
    assert due.cancel_due(0.0)
    attempts = []
    now = 0.0
    for _ in range(4):
        due.after_cancel(now, base_s=BASE, cap_s=CAP)
        attempts.append(due.cancel_at - now)  # type: ignore[operator]
        assert not due.cancel_due(now)
    assert attempts == [1.0, 2.0, 4.0, 8.0]
    due.after_poll(now, changed=False, base_s=BASE, cap_s=CAP)
    assert due.at == due.cancel_at  # not 30 s later


def test_an_order_spends_at_most_its_budget_per_window() -> None:
    budget = RequestBudget(limit=3, window_s=60)
    for second in (0.0, 1.0, 2.0):
        assert budget.wait_s(second) == 0
        budget.spend(second)
    assert budget.wait_s(10.0) == 50.0
    assert budget.wait_s(60.0) == 0  # the first one left the window


def polls_in_a_day(order: OrderRow) -> int:
    """How many times one unchanged order is polled in 24 h with the default caps."""
    settings = ExecutorSettings()
    due, now, polls = Due(0), 0.0, 0
    cap = poll_cap_s(order, settings.poll_max_interval_s, settings.resting_stop_poll_max_interval_s)
    while now < 86_400:
        polls += 1
        due.after_poll(now, changed=False, base_s=settings.poll_interval_s, cap_s=cap)
        now = due.at
    return polls


def stop_order(status: str = "open", cancel_code: str | None = None) -> OrderRow:
    return OrderRow(
        client_order_id="c", exchange_client_order_id="t-c", intent_id="stop:b:p:1", bot_id="b",
        product_id="ETH-BTC", mode="mock", action="exit", side="sell", order_type=STOP,
        base_size=Decimal("0.1"), status=status, cancel_code=cancel_code,
        decided_at=datetime(2026, 1, 5, tzinfo=UTC),
    )  # fmt: skip


def test_a_stop_resting_untriggered_is_polled_at_a_slower_cadence() -> None:
    """Resting stops are long-lived by design: at the cap of other orders each one cost 2,884
    polls a day of the account's shared rate limit; at the resting stops' cap 726."""
    limit = stop_order().model_copy(update={"order_type": "limit"})
    assert polls_in_a_day(stop_order()) == 726 and polls_in_a_day(limit) == 2_884
    # A triggered stop fills, a stop being cancelled waits for its confirmation: as any order.
    assert polls_in_a_day(stop_order("partially_filled")) == 2_884
    assert polls_in_a_day(stop_order(cancel_code="STOP_BEFORE_SELL")) == 2_884
