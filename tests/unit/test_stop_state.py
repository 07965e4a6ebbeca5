"""A position's stop as ``tranche status`` and the dashboard show it (pure): the signal service's
judgement (the stop it asks for, or why none) joined with the stops the executor holds live."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from rich.console import Console

from shared.contracts import Reason
from shared.stops import (
    AskedStop,
    HeldStop,
    LiveStop,
    StopOrder,
    live_status,
    state_json,
    stop_state,
    stop_states,
)
from tranche.status import render_stops, stops_of

HOLDING = Decimal("0.12345678")
WANTED = StopOrder(HOLDING, Decimal("49000.00"), Decimal("48755.00"))
BELOW = Reason(code="STOP_BELOW_MINIMUM", message="below the product's minimum")


def live(size: Decimal = HOLDING, status: str = "resting", cid: str = "s1") -> LiveStop:
    order = StopOrder(size, WANTED.stop_price, WANTED.limit_price)
    return LiveStop(cid, order, status)  # type: ignore[arg-type]  # a literal from the table


def test_a_resting_stop_of_the_holding_is_live_at_the_right_size() -> None:
    state = stop_state(HOLDING, WANTED, None, [live()])
    assert (state.state, state.reason.code, state.client_order_id) == ("live", "STOP_LIVE", "s1")
    assert state.size_matches is True and state.order == WANTED and state.live_count == 1


def test_a_live_stop_smaller_than_the_holding_says_so() -> None:
    state = stop_state(HOLDING, WANTED, None, [live(Decimal("0.1"))])
    assert (state.state, state.size_matches, state.reason.code) == (
        "live",
        False,
        "STOP_LIVE_MISMATCH",
    )
    assert f"not the {HOLDING}" in state.reason.message


def test_with_nothing_asked_the_live_stop_is_measured_against_the_holding() -> None:
    assert stop_state(HOLDING, None, None, [live()]).size_matches is True
    assert stop_state(Decimal("0.2"), None, None, [live()]).size_matches is False


def test_the_stop_that_matches_is_shown_when_a_replacement_is_under_way() -> None:
    old = live(Decimal("0.1"), cid="old")
    state = stop_state(HOLDING, WANTED, None, [old, live(cid="new")])
    assert state.client_order_id == "new" and state.live_count == 2
    assert (
        state.reason.code == "STOP_LIVE_MISMATCH" and "1 more stop(s) live" in state.reason.message
    )


@pytest.mark.parametrize("status", ["pending", "cancelling"])
def test_a_stop_not_yet_confirmed_is_pending(status: str) -> None:
    state = stop_state(HOLDING, WANTED, None, [live(status=status)])
    assert (state.state, state.reason.code, state.client_order_id) == (
        "pending",
        "STOP_WAITING",
        "s1",
    )
    assert status in state.reason.message


def test_a_stop_asked_that_the_executor_does_not_hold_yet_is_pending() -> None:
    state = stop_state(HOLDING, WANTED, None, [])
    assert (state.state, state.reason.code, state.client_order_id) == (
        "pending",
        "STOP_ASKED",
        None,
    )
    assert "49000.00" in state.reason.message


def test_no_stop_carries_the_signal_services_reason() -> None:
    state = stop_state(HOLDING, None, BELOW, [])
    assert (state.state, state.reason) == ("none", BELOW)


def test_no_stop_and_no_reason_says_the_position_is_not_judged_yet() -> None:
    assert stop_state(HOLDING, None, None, []).reason.code == "STOP_NOT_JUDGED"


@pytest.mark.parametrize(
    ("status", "cancel", "expected"),
    [
        ("new", False, "pending"),
        ("submitted", False, "pending"),
        ("open", False, "resting"),
        ("partially_filled", False, "resting"),
        ("unknown_at_exchange", False, "pending"),
        ("open", True, "cancelling"),
    ],
)
def test_an_order_status_maps_to_a_live_status(status: str, cancel: bool, expected: str) -> None:
    assert live_status(status, cancel) == expected


def test_the_join_is_per_bot_and_shows_a_live_stop_of_a_bot_nobody_judged() -> None:
    asked = [
        AskedStop(
            bot_id="a",
            product_id="BTC-USD",
            holding=HOLDING,
            wanted_size=WANTED.size,
            stop_price=WANTED.stop_price,
            limit_price=WANTED.limit_price,
            intent_id="stop:a:p:1",
        ),
        AskedStop(bot_id="b", product_id="BTC-USD", holding=Decimal("0.00001"), reason=BELOW),
    ]
    held = [
        HeldStop(
            bot_id=bot,
            client_order_id=f"{bot}-1",
            intent_id=f"stop:{bot}:p:1",
            status="resting",
            order_status="open",
            size=HOLDING,
            stop_price=WANTED.stop_price,
            limit_price=WANTED.limit_price,
        )
        for bot in ("a", "c")
    ]
    states = stop_states(asked, held)
    assert {bot: s.state for bot, s in states.items()} == {"a": "live", "b": "none", "c": "live"}
    assert states["a"].size_matches is True and states["c"].size_matches is False
    shown = state_json(states["a"])
    assert shown["size"] == str(HOLDING) and shown["code"] == "STOP_LIVE"
    assert state_json(states["b"])["reason"] == BELOW.message


def held_json(bot: str, size: Decimal = HOLDING) -> dict[str, str]:
    return {
        "bot_id": bot, "client_order_id": f"{bot}-1", "intent_id": f"stop:{bot}:p:1",
        "status": "resting", "order_status": "open", "size": str(size),
        "stop_price": str(WANTED.stop_price), "limit_price": str(WANTED.limit_price),
    }  # fmt: skip


def test_status_joins_both_services_answers_and_measures_an_unjudged_stop_by_the_ledger() -> None:
    asked = [{"bot_id": "b", "product_id": "BTC-USD", "holding": "0.00001",
              "reason": {"code": BELOW.code, "message": BELOW.message}}]  # fmt: skip
    positions = [{"bot_id": "c", "status": "open", "quantity": str(HOLDING)}]
    stops = stops_of(positions, (200, asked), (200, [held_json("c")]))
    assert stops["unread"] == []
    assert stops["bots"]["b"]["state"] == "none" and stops["bots"]["b"]["code"] == BELOW.code
    assert stops["bots"]["c"]["state"] == "live" and stops["bots"]["c"]["size_matches"] is True


def test_status_says_which_service_it_could_not_read() -> None:
    stops = stops_of([], (None, "unreachable: ConnectError"), (200, [held_json("c")]))
    assert stops["unread"] == ["signal: unreachable: ConnectError"]
    assert stops["bots"]["c"]["size_matches"] is False  # the ledger said nothing is held


def test_status_prints_the_live_stop_against_the_holding_and_the_reason_for_none() -> None:
    asked = [{"bot_id": "b", "product_id": "BTC-USD", "holding": "0.00001",
              "reason": {"code": BELOW.code, "message": BELOW.message}}]  # fmt: skip
    held = [held_json("c", Decimal("0.1"))]
    positions = [{"bot_id": "c", "status": "open", "quantity": str(HOLDING)}]
    console = Console(width=200, file=io.StringIO(), color_system=None)
    render_stops(stops_of(positions, (200, asked), (503, "not ready")), console)
    render_stops(stops_of(positions, (200, asked), (200, held)), console)
    text = console.file.getvalue()
    assert "could not read executor: HTTP 503" in text
    assert f"STOP_BELOW_MINIMUM: {BELOW.message}" in text
    assert "live WRONG SIZE" in text and f"0.1 / {HOLDING}" in text and "c-1" in text
