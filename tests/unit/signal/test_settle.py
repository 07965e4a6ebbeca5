"""The lock-step replay's settle tracker: when an intent has run its whole course (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.signal.settle import SettleTracker

BOT = "eth-btc-momentum"


def tracker_with(intent_id: str = "i-1", at: float = 0.0) -> SettleTracker:
    tracker = SettleTracker()
    tracker.created(intent_id, BOT, at)
    return tracker


def test_an_intent_waits_for_safetys_decision_first() -> None:
    tracker = tracker_with()
    assert tracker.waiting_for("i-1") == "decision"
    assert [item.intent_id for item in tracker.unsettled()] == ["i-1"]


def test_a_rejected_intent_is_settled() -> None:
    tracker = tracker_with()
    tracker.decided("i-1", approved=False)
    assert tracker.waiting_for("i-1") is None and tracker.unsettled() == []


def test_an_approved_intent_waits_for_its_order_to_be_final() -> None:
    tracker = tracker_with()
    tracker.decided("i-1", approved=True)
    assert tracker.waiting_for("i-1") == "order"
    tracker.order_event("i-1", BOT, "mock", "submitted", [], 5)
    assert tracker.waiting_for("i-1") == "order"


def test_a_filled_order_waits_until_the_position_shows_its_fills_then_for_safety() -> None:
    tracker = tracker_with()
    tracker.decided("i-1", approved=True)
    tracker.order_event("i-1", BOT, "mock", "submitted", [], 5)
    tracker.order_event("i-1", BOT, "mock", "filled", ["t-1", "t-2"], 6)
    assert tracker.waiting_for("i-1") == "position"
    tracker.position(BOT, "mock", 1)  # one of the two fills booked so far
    assert tracker.waiting_for("i-1") == "position"
    tracker.position(BOT, "mock", 2)
    assert tracker.waiting_for("i-1") == "safety"
    tracker.consumed(5)  # safety has not acknowledged the final event (sequence 6) yet
    assert tracker.waiting_for("i-1") == "safety"
    tracker.consumed(6)
    assert tracker.unsettled() == []


def test_a_position_counts_every_fill_of_the_bot_not_only_this_orders() -> None:
    tracker = SettleTracker()
    for n, trade in ((1, "t-1"), (2, "t-2")):
        tracker.created(f"i-{n}", BOT, 0.0)
        tracker.decided(f"i-{n}", approved=True)
        tracker.order_event(f"i-{n}", BOT, "mock", "filled", [trade], n)
    tracker.consumed(2)
    tracker.position(BOT, "mock", 1)  # the ledger has booked the first order only
    assert {item.intent_id for item in tracker.unsettled()} == {"i-1", "i-2"}
    tracker.position(BOT, "mock", 2)
    assert tracker.unsettled() == []


def test_a_repeated_fill_is_counted_once_and_another_modes_position_does_not_count() -> None:
    tracker = tracker_with()
    tracker.decided("i-1", approved=True)
    tracker.order_event("i-1", BOT, "mock", "partially_filled", ["t-1"], 3)
    tracker.order_event("i-1", BOT, "mock", "filled", ["t-1"], 4)  # the same trade again
    tracker.consumed(4)
    tracker.position(BOT, "production", 5)
    assert tracker.waiting_for("i-1") == "position"
    tracker.position(BOT, "mock", 1)
    assert tracker.waiting_for("i-1") is None


@pytest.mark.parametrize("status", ["failed", "cancelled", "expired"])
def test_an_order_that_ends_without_fills_needs_no_position(status: str) -> None:
    tracker = tracker_with()
    tracker.decided("i-1", approved=True)
    tracker.order_event("i-1", BOT, "mock", status, [], 9)
    assert tracker.waiting_for("i-1") == "safety"
    tracker.consumed(9)
    assert tracker.unsettled() == []


def test_a_cancelled_order_with_earlier_fills_waits_for_them_to_be_booked() -> None:
    tracker = tracker_with()
    tracker.decided("i-1", approved=True)
    tracker.order_event("i-1", BOT, "mock", "partially_filled", ["t-1"], 3)
    tracker.order_event("i-1", BOT, "mock", "cancelled", [], 4)
    tracker.consumed(4)
    assert tracker.waiting_for("i-1") == "position"


def test_facts_that_arrive_before_the_intent_is_registered_are_kept() -> None:
    tracker = SettleTracker()
    tracker.decided("i-1", approved=True)
    tracker.order_event("i-1", BOT, "mock", "failed", [], 2)
    tracker.consumed(2)
    assert tracker.unsettled() == []  # nothing registered: nothing to wait for
    tracker.created("i-1", BOT, 1.0)
    assert tracker.waiting_for("i-1") is None


def test_the_oldest_intent_past_the_timeout_is_overdue_with_what_it_waits_for() -> None:
    tracker = SettleTracker()
    tracker.created("old", BOT, 10.0)
    tracker.created("new", BOT, 20.0)
    tracker.decided("old", approved=True)
    assert tracker.overdue(now=30.0, timeout_s=30.0) is None
    late = tracker.overdue(now=45.0, timeout_s=30.0)
    assert late is not None and late.intent_id == "old" and late.waiting_for == "order"
    assert late.describe() == (
        f"intent old of bot {BOT} waits for its order to reach a final status"
    )


EVENTS = st.lists(
    st.tuples(st.sampled_from(["decided", "order", "position", "consumed"]), st.integers(0, 3)),
    max_size=12,
)


@given(EVENTS)
def test_settled_only_when_every_condition_holds_whatever_the_order_of_facts(events) -> None:
    """Whatever order the facts come in, the tracker says settled exactly when: rejected, or
    approved + final + the position shows every fill + safety consumed the final event."""
    tracker = tracker_with()
    approved, final, booked, consumed = None, False, 0, 0
    for kind, n in events:
        if kind == "decided":
            approved = approved if approved is not None else n != 0
            tracker.decided("i-1", approved=approved)
        elif kind == "order":
            tracker.order_event("i-1", BOT, "mock", "filled", ["t-1"], 7)
            final = True
        elif kind == "position":
            booked = max(booked, n)
            tracker.position(BOT, "mock", n)
        else:
            consumed = max(consumed, n * 3)
            tracker.consumed(n * 3)
    expected = approved is False or (approved is True and final and booked >= 1 and consumed >= 7)
    assert (tracker.waiting_for("i-1") is None) == expected


@pytest.mark.parametrize("status", ["open", "partially_filled", "cancelled", "failed", "filled"])
def test_a_stop_settles_once_the_signal_has_heard_it_rest_or_end(status: str) -> None:
    """A resting stop is never final by design; what the next tick decides (the signal's own
    stop-loss stands down while it rests) depends on the signal knowing it rests."""
    tracker = SettleTracker()
    tracker.created("stop:b:p:1", BOT, 0.0, stop=True)
    tracker.decided("stop:b:p:1", approved=True)
    tracker.order_event("stop:b:p:1", BOT, "mock", "open", [], 3)  # on the stream, not yet heard
    assert tracker.waiting_for("stop:b:p:1") == "stop"
    tracker.stop_heard("stop:b:p:1", "submitted")
    assert tracker.waiting_for("stop:b:p:1") == "stop"
    tracker.stop_heard("stop:b:p:1", status)
    assert tracker.unsettled() == []


def test_a_stop_safety_refused_is_settled() -> None:
    tracker = SettleTracker()
    tracker.created("stop:b:p:1", BOT, 0.0, stop=True)
    tracker.decided("stop:b:p:1", approved=False)
    assert tracker.unsettled() == []


def test_a_position_of_an_order_under_way_waits_until_safety_has_its_event() -> None:
    """As in the backtest, where safety records an order event before the ledger books it."""
    tracker = tracker_with()
    tracker.decided("i-1", approved=True)
    assert tracker.position_waits_for(BOT, "e-final") == "event"  # the ledger was quicker
    tracker.order_event("i-1", BOT, "mock", "filled", ["t-1"], 6, message_id="e-final")
    assert tracker.position_waits_for(BOT, "e-final") == "safety"
    tracker.consumed(6)
    assert tracker.position_waits_for(BOT, "e-final") is None


def test_a_position_waits_for_nothing_without_an_order_of_the_replay_under_way() -> None:
    tracker = SettleTracker()
    assert tracker.position_waits_for(BOT, "e-before-the-replay") is None
    tracker.created("stop-1", BOT, 0.0, stop=True)  # a resting stop is not an order under way
    tracker.decided("stop-1", approved=True)
    assert tracker.position_waits_for(BOT, "e-before-the-replay") is None
    other = tracker_with()
    other.decided("i-1", approved=True)
    assert other.position_waits_for("another-bot", "e-1") is None
    assert other.position_waits_for(BOT, None) is None  # a position from before the ids
