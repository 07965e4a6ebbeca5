"""The order state machine table, exhaustively: every (state, event) pair is a transition to a
known state or a named refusal; what each of Coinbase's statuses does from every state."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.executor.orders import ExchangeReport, OrderIdentity, OrderState, advance
from services.executor.states import (
    CANCEL_ASKED,
    COINBASE_STATUSES,
    EVENTS,
    FINAL_STATES,
    NEW,
    NOT_FOUND,
    RESOLVED_CANCELLED,
    RESOLVED_FILLED,
    STATES,
    TRANSITIONS,
    Refusal,
    transition,
)

ORDER = OrderIdentity("bot-1", "BTC-USD", "production", "i-1", "c-1", "entry", "buy")
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def test_coinbase_documents_these_statuses_and_the_table_has_each() -> None:
    assert set(COINBASE_STATUSES) == {
        "PENDING", "OPEN", "FILLED", "CANCELLED", "EXPIRED", "FAILED", "UNKNOWN_ORDER_STATUS",
        "QUEUED", "CANCEL_QUEUED", "EDIT_QUEUED",
    }  # fmt: skip


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("event", EVENTS)
def test_every_pair_is_a_transition_or_a_named_refusal(state: str, event: str) -> None:
    outcome = TRANSITIONS[(state, event)]
    if isinstance(outcome, Refusal):
        assert outcome.code and outcome.message
    else:
        assert outcome in STATES
        assert state not in FINAL_STATES, "a final order never changes"


def test_the_table_has_nothing_but_the_pairs() -> None:
    assert len(TRANSITIONS) == len(STATES) * len(EVENTS)


@pytest.mark.parametrize("state", STATES)
def test_an_unknown_or_undocumented_status_alerts_from_every_state(state: str) -> None:
    for status in ("UNKNOWN_ORDER_STATUS", "SOMETHING_COINBASE_ADDED", "UNKNOWN"):
        outcome = transition(state, status)
        if state in FINAL_STATES:
            assert isinstance(outcome, Refusal) and outcome.code in ("FINAL", "UNRECOGNISED_STATUS")
        else:
            assert isinstance(outcome, Refusal) and outcome.alert, (state, status)


@pytest.mark.parametrize(
    ("state", "event", "expected"),
    [
        (NEW, "PENDING", "submitted"), (NEW, "QUEUED", "submitted"), (NEW, "OPEN", "open"),
        ("submitted", "EDIT_QUEUED", "open"), ("open", "EDIT_QUEUED", "SAME"),
        ("open", "CANCEL_QUEUED", "pending_cancel"), ("open", CANCEL_ASKED, "pending_cancel"),
        (NEW, CANCEL_ASKED, "NOT_ON_EXCHANGE"), ("pending_cancel", "OPEN", "SAME"),
        ("pending_cancel", "FILLED", "filled"), ("pending_cancel", "CANCELLED", "cancelled"),
        ("open", "PENDING", "BEHIND"), ("partially_filled", "QUEUED", "BEHIND"),
        ("open", NOT_FOUND, "unknown_at_exchange"),
        ("unknown_at_exchange", "OPEN", "open"), ("unknown_at_exchange", "FILLED", "filled"),
        ("unknown_at_exchange", RESOLVED_CANCELLED, "cancelled"),
        ("unknown_at_exchange", RESOLVED_FILLED, "filled"),
        ("open", RESOLVED_CANCELLED, "NOT_LOST"),
        ("filled", "FILLED", "SAME"), ("filled", "OPEN", "FINAL"),
        ("cancelled", "FILLED", "FINAL_CONTRADICTED"),
    ],
)  # fmt: skip
def test_named_cells(state: str, event: str, expected: str) -> None:
    outcome = transition(state, event)
    assert (outcome.code if isinstance(outcome, Refusal) else outcome) == expected


def test_a_final_order_contradicted_by_the_exchange_raises_an_alert() -> None:
    assert transition("cancelled", "FILLED").alert  # type: ignore[union-attr]
    assert not transition("filled", "OPEN").alert  # type: ignore[union-attr]


@pytest.mark.parametrize("status", ["UNKNOWN_ORDER_STATUS", "BRAND_NEW_STATUS"])
def test_an_unknown_status_is_an_alert_not_a_silent_ask_again(status: str) -> None:
    """Issue 17 item 4: ``UNKNOWN_ORDER_STATUS`` (and ``EDIT_QUEUED``) fell through to "ask
    again" without a word; now the report carries an alert the executor logs and counts."""
    step = advance(ORDER, OrderState("open", (), "x-1"), ExchangeReport("x-1", status), NOW)
    assert step.status == "open" and step.events == []
    assert step.alert is not None and step.alert.alert


def test_a_cancel_queued_on_the_exchange_is_a_state_not_a_column() -> None:
    step = advance(
        ORDER, OrderState("open", (), "x-1"), ExchangeReport("x-1", "CANCEL_QUEUED"), NOW
    )
    assert step.status == "pending_cancel" and step.alert is None
