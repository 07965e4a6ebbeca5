"""Properties of ``decide`` over generated states and intents (hypothesis)."""

from __future__ import annotations

from dataclasses import fields
from datetime import timedelta
from decimal import Decimal

from hypothesis import find, given, settings
from hypothesis import strategies as st

from services.safety.rules import (
    ENTRY_ONLY,
    BotState,
    Counters,
    Limits,
    Market,
    Position,
    decide,
)
from tests.unit.safety.builders import T0, make_intent

# Biased towards calm states, so that a fair share of the examples is approved and the
# properties about approvals are not vacuous (test_calm_examples_get_approved checks it).
small = st.integers(min_value=0, max_value=12)
money = st.decimals(min_value=0, max_value=1, places=4)
past = st.integers(0, 600).map(lambda s: T0 - timedelta(seconds=s))
soon = st.integers(0, 600).map(lambda s: T0 + timedelta(seconds=s))
often_none = st.one_of(st.none(), st.none(), st.none(), past)

used = st.integers(min_value=0, max_value=6)
counters = st.builds(
    Counters,
    bot_entries_hour=used,
    bot_entries_day=used,
    all_entries_hour=used,
    all_entries_day=used,
    bot_notional_day=st.decimals(min_value=0, max_value="0.1", places=4),
    open_positions=used,
)
known_positions = st.builds(
    Position,
    quantity=st.sampled_from([Decimal(0), Decimal("0.05"), Decimal("0.1"), Decimal("1.5")]),
    tranches=st.sampled_from([0, 1, 1, 2, 3, 4]),
    last_entry_price=st.none() | st.decimals(min_value="0.05", max_value="0.12", places=4),
    cost_basis=money,
)
states = st.builds(
    BotState,
    mode=st.sampled_from(["mock", "production"]),
    trading_state=st.sampled_from(["active", "active", "active", "active", "reducing", "halted"]),
    last_entry_at=often_none,
    last_exit_at=often_none,
    orders_in_flight=st.sampled_from([0, 0, 0, 1]),
    entries_in_flight=st.sampled_from([0, 0, 1]),
    position=st.one_of(known_positions, known_positions, known_positions, st.none()),
    counters=counters,
    production_entries=small,
    market=st.one_of(
        st.none(),
        st.none(),
        st.builds(
            Market, price=st.decimals(min_value="0.08", max_value="0.1", places=4), time=soon
        ),
    ),
    received_at=st.one_of(st.none(), st.none(), soon),
)
# Nothing but the counted limits in the way: the counter property meets many approvals here.
calm_states = st.builds(
    BotState,
    mode=st.sampled_from(["mock", "production"]),
    position=known_positions,
    counters=counters,
    production_entries=small,
)
limits = st.builds(
    Limits,
    max_entries_per_bot_hour=st.none() | small,
    max_entries_per_bot_day=st.none() | small,
    max_entries_all_hour=st.none() | small,
    max_entries_all_day=st.none() | small,
    max_notional_per_bot_day=st.none() | money,
    max_open_positions=st.none() | small,
    max_tranches=st.integers(1, 5),
    add_step_pct=st.decimals(min_value=0, max_value=5, places=1),
    ramp_max_notional=st.none() | st.decimals(min_value="0.001", max_value="0.02", places=3),
)
intents = st.builds(
    make_intent,
    action=st.sampled_from(["entry", "add", "exit"]),
    priced=st.sampled_from([True, True, True, True, False]),
    price=st.sampled_from(["0.085", "0.09", "0.095"]),
    size=st.sampled_from(["0.001", "0.01", "0.05", "0.5"]),
)

CAPS = {
    "bot_entries_hour": "max_entries_per_bot_hour",
    "bot_entries_day": "max_entries_per_bot_day",
    "all_entries_hour": "max_entries_all_hour",
    "all_entries_day": "max_entries_all_day",
    "bot_notional_day": "max_notional_per_bot_day",
    "open_positions": "max_open_positions",
}


@settings(max_examples=400, deadline=None)
@given(intent=intents, state=calm_states | states, limits=limits)
def test_an_approval_never_leaves_a_counter_above_its_limit(intent, state, limits) -> None:
    decision = decide(intent, state, limits, T0)
    if not decision.approved:
        return
    for counter in fields(Counters):
        cap = getattr(limits, CAPS[counter.name])
        before = getattr(state.counters, counter.name)
        after = getattr(decision.counters_after, counter.name)
        # A counter already over its limit (a limit lowered since) may stay there, never grow.
        assert cap is None or after <= cap or after == before, counter.name
    position = state.position
    assert position is not None
    if intent.action != "exit":
        assert position.tranches + state.entries_in_flight + 1 <= limits.max_tranches
    else:
        assert decision.intent.base_size <= position.quantity  # no shorting


@settings(max_examples=400, deadline=None)
@given(intent=intents, state=states, limits=limits)
def test_a_rejection_always_has_a_reason(intent, state, limits) -> None:
    decision = decide(intent, state, limits, T0)
    assert decision.approved or len(decision.reasons) >= 1
    assert decision.approved == (decision.intent is not None)


@settings(max_examples=400, deadline=None)
@given(intent=intents.filter(lambda i: i.action == "exit"), state=states, limits=limits)
def test_exits_are_never_blocked_by_entry_only_rules(intent, state, limits) -> None:
    decision = decide(intent, state, limits, T0)
    assert not {r.code for r in decision.reasons} & ENTRY_ONLY


@settings(max_examples=200, deadline=None)
@given(intent=intents, state=states, limits=limits)
def test_the_same_facts_give_the_same_decision(intent, state, limits) -> None:
    assert decide(intent, state, limits, T0) == decide(intent, state, limits, T0)


def test_calm_examples_get_approved() -> None:
    """The generators reach approvals of every action (else the properties above are vacuous)."""
    for action in ("entry", "add", "exit"):
        found = find(
            st.tuples(intents.filter(lambda i, a=action: i.action == a), states, limits),
            lambda example: decide(*example, T0).approved,
            settings=settings(max_examples=500, deadline=None),
        )
        assert found[0].action == action


def test_every_counter_has_a_limit() -> None:
    assert {f.name for f in fields(Counters)} == set(CAPS)
    assert Decimal(0) == Counters().bot_notional_day
