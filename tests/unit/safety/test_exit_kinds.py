"""Which rules each kind of exit passes (docs/safety.md): standing exits (protective, flatten)
pass the exit cooldown and sell exactly the position; nothing passes a halt."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from services.safety.rulebook import RULEBOOK, passes
from services.safety.rules import ENTRY_ONLY, RULES, Position, decide, decision_time
from shared.contracts import Reason
from tests.unit.safety.builders import HOLDING, LIMITS, T0, make_intent, state_for


def exit_for(code: str, size: str = "0.1", minutes: float = 0.5):
    intent = make_intent("exit", at=T0 + timedelta(minutes=minutes), size=size)
    return intent.model_copy(update={"reason": Reason(code=code, message="t")})


def codes(intent, **changes) -> list[str]:
    state = state_for("exit", **changes)
    return [r.code for r in decide(intent, state, LIMITS, decision_time(intent)).reasons]


@pytest.mark.parametrize("code", ["STOP_LOSS", "TAKE_PROFIT", "TRAILING_STOP", "FLATTEN"])
def test_a_standing_exit_passes_the_exit_cooldown(code: str) -> None:
    # Issue 15, reproduced 1: a stop-loss 30 s after a partial exit was EXIT_COOLDOWN.
    assert codes(exit_for(code), last_exit_at=T0) == []


def test_a_signal_exit_still_waits_for_the_exit_cooldown() -> None:
    assert codes(exit_for("SIGNAL"), last_exit_at=T0) == ["EXIT_COOLDOWN"]


@pytest.mark.parametrize("code", ["SIGNAL", "STOP_LOSS", "FLATTEN"])
@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"trading_state": "halted"}, "HALTED"),
        ({"orders_in_flight": 1}, "ORDER_IN_FLIGHT"),
        ({"orders_in_flight": 1, "unknown_at_exchange": ("lost",)}, "ORDER_UNKNOWN_AT_EXCHANGE"),
        ({"position": None}, "POSITION_UNKNOWN"),
        ({"position": Position()}, "NOTHING_TO_SELL"),
    ],
)
def test_no_exit_passes_a_halt_an_order_in_flight_or_an_unknown_position(
    code: str, changes: dict, expected: str
) -> None:
    assert codes(exit_for(code), **changes) == [expected]


def test_a_standing_exit_sells_exactly_the_position_it_was_sized_from_a_lagging_one() -> None:
    # Issue 15, reproduced 3: a sell sized from the position before a fill sold half.
    intent = exit_for("STOP_LOSS", size="0.05")
    decision = decide(intent, state_for("exit"), LIMITS, decision_time(intent))
    assert decision.approved and decision.intent.base_size == HOLDING.quantity
    assert [a.code for a in decision.adjustments] == ["EXIT_SIZED_TO_POSITION"]


def test_a_signal_exit_keeps_its_fraction_and_nothing_sells_more_than_is_held() -> None:
    part = exit_for("SIGNAL", size="0.05")
    assert decide(part, state_for("exit"), LIMITS, T0).intent.base_size == Decimal("0.05")
    more = exit_for("FLATTEN", size="0.5")
    decision = decide(more, state_for("exit"), LIMITS, T0)
    assert decision.intent.base_size == HOLDING.quantity
    assert [a.code for a in decision.adjustments] == ["EXIT_CUT_TO_POSITION"]


def test_the_codes_safety_reports_derive_from_the_rule_list() -> None:
    assert list(RULES) == [rule.code for rule in RULEBOOK]
    assert len(set(RULES)) == len(RULES)
    assert {"REDUCING", "ENTRY_COOLDOWN", "TRANCHE_CAP"} <= ENTRY_ONLY
    assert "NOTHING_TO_SELL" not in ENTRY_ONLY and "HALTED" not in ENTRY_ONLY
    assert set(passes("protective")) == ENTRY_ONLY | {"EXIT_COOLDOWN"}
    assert passes("protective") == passes("flatten")
    assert set(passes("signal")) == ENTRY_ONLY
    assert passes("entry") == ("NOTHING_TO_SELL",)
