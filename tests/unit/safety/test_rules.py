"""Safety's decision: every rule, every reason that applies, event time, exits never blocked by
entry-only rules."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from services.safety.rules import (
    BotState,
    Counters,
    Limits,
    Market,
    Position,
    client_order_id_for,
    decide,
    decision_time,
)
from shared.contracts import TradeIntent
from tests.unit.safety.builders import HOLDING, LIMITS, T0, make_intent, state_for

D = Decimal


def codes(intent, state: BotState, limits: Limits = LIMITS) -> list[str]:
    return [r.code for r in decide(intent, state, limits, decision_time(intent)).reasons]


# -- cooldowns, counted from the later of the approval and the last fill, in event time ----------


@pytest.mark.parametrize(
    ("action", "changes", "minutes_later", "expected"),
    [
        ("entry", {}, 0, []),
        ("entry", {"last_entry_at": T0}, 4, ["ENTRY_COOLDOWN"]),
        ("entry", {"last_entry_at": T0}, 5, []),
        ("add", {"last_entry_at": T0}, 1, ["ENTRY_COOLDOWN"]),
        ("exit", {"last_entry_at": T0}, 1, []),
        ("entry", {"last_exit_at": T0}, 0.5, ["EXIT_COOLDOWN"]),
        ("exit", {"last_exit_at": T0}, 0.5, ["EXIT_COOLDOWN"]),
        (
            "entry",
            {"last_entry_at": T0, "last_exit_at": T0},
            0.5,
            ["EXIT_COOLDOWN", "ENTRY_COOLDOWN"],
        ),
    ],
)
def test_cooldowns(action: str, changes: dict, minutes_later: float, expected: list[str]) -> None:
    intent = make_intent(action, at=T0 + timedelta(minutes=minutes_later))
    assert codes(intent, state_for(action, **changes)) == expected


def test_a_slow_fill_moves_the_cooldown_start() -> None:
    # The store passes the later of approval and last fill as last_entry_at.
    fill = T0 + timedelta(minutes=3)
    intent = make_intent(at=T0 + timedelta(minutes=6))
    assert codes(intent, state_for("entry", last_entry_at=fill)) == ["ENTRY_COOLDOWN"]


def test_a_rejection_says_how_long_to_wait() -> None:
    intent = make_intent(at=T0 + timedelta(minutes=3, seconds=30))
    (reason,) = decide(
        intent, state_for("entry", last_entry_at=T0), LIMITS, decision_time(intent)
    ).reasons
    assert "1m30s to go" in reason.message and "5m00s apart" in reason.message  # fmt: skip


def test_cooldowns_use_market_time_not_the_wall_clock() -> None:
    assert decision_time(make_intent(at=T0)) == T0


# -- fail closed ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "changes", "priced", "expected"),
    [
        ("entry", {}, False, ["NO_MARKET_DATA"]),
        ("exit", {}, False, ["NO_MARKET_DATA"]),
        ("entry", {"position": None}, True, ["POSITION_UNKNOWN"]),
        ("exit", {"position": None}, True, ["POSITION_UNKNOWN"]),
        ("entry", {"orders_in_flight": 1, "entries_in_flight": 1}, True, ["ORDER_IN_FLIGHT"]),
        ("exit", {"orders_in_flight": 1}, True, ["ORDER_IN_FLIGHT"]),
    ],
)
def test_no_price_unknown_position_or_an_order_in_flight_means_no_trade(
    action: str, changes: dict, priced: bool, expected: list[str]
) -> None:
    assert codes(make_intent(action, priced=priced), state_for(action, **changes)) == expected


# -- trading states ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "trading_state", "expected"),
    [
        ("entry", "active", []),
        ("add", "active", []),
        ("exit", "active", []),
        ("entry", "reducing", ["REDUCING"]),
        ("add", "reducing", ["REDUCING"]),
        ("exit", "reducing", []),
        ("entry", "halted", ["HALTED"]),
        ("exit", "halted", ["HALTED"]),
    ],
)
def test_reducing_allows_only_exits_and_halted_nothing(
    action: str, trading_state: str, expected: list[str]
) -> None:
    state = state_for(action, trading_state=trading_state, trading_reason="test")
    assert codes(make_intent(action), state) == expected


# -- counted limits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counters", "limits", "expected"),
    [
        (Counters(bot_entries_hour=5), {}, []),
        (Counters(bot_entries_hour=6), {}, ["BOT_ENTRIES_PER_HOUR"]),
        (Counters(bot_entries_day=24), {}, ["BOT_ENTRIES_PER_DAY"]),
        (Counters(all_entries_hour=60), {}, ["ALL_ENTRIES_PER_HOUR"]),
        (Counters(all_entries_day=400), {}, ["ALL_ENTRIES_PER_DAY"]),
        (
            Counters(bot_notional_day=D("0.095")),
            {"max_notional_per_bot_day": D("0.1")},
            ["BOT_NOTIONAL_PER_DAY"],
        ),
        (Counters(bot_notional_day=D("0.09")), {"max_notional_per_bot_day": D("0.1")}, []),
        (Counters(open_positions=25), {"max_open_positions": 25}, ["OPEN_POSITIONS"]),
        (Counters(open_positions=2), {"max_open_positions": 2}, ["OPEN_POSITIONS"]),
        (Counters(), {"max_order_notional": D("0.005")}, ["ORDER_TOO_LARGE"]),
        (Counters(), {"min_order_notional": D("0.02")}, ["ORDER_TOO_SMALL"]),
        (Counters(bot_entries_hour=0), {"max_entries_per_bot_hour": 0}, ["BOT_ENTRIES_PER_HOUR"]),
        (Counters(bot_entries_hour=99), {"max_entries_per_bot_hour": None}, []),
    ],
)
def test_counted_limits_stop_the_entry_that_would_pass_them(
    counters: Counters, limits: dict, expected: list[str]
) -> None:
    state = state_for("entry", counters=counters)
    assert codes(make_intent("entry"), state, replace(LIMITS, **limits)) == expected


def test_an_add_to_an_open_position_does_not_open_another() -> None:
    state = state_for("add", counters=Counters(open_positions=25))
    assert codes(make_intent("add"), state) == []


def test_an_approval_counts_itself_in_the_counters_after() -> None:
    state = state_for("entry", counters=Counters(bot_entries_hour=2, bot_notional_day=D("0.02")))
    decision = decide(make_intent("entry"), state, LIMITS, T0)
    assert decision.approved
    assert decision.counters == state.counters
    assert decision.counters_after.bot_entries_hour == 3
    assert decision.counters_after.bot_notional_day == D("0.03")
    assert decision.counters_after.open_positions == 1


def test_every_reason_is_reported_not_only_the_first() -> None:
    state = state_for(
        "entry",
        last_entry_at=T0,
        trading_state="reducing",
        counters=Counters(bot_entries_hour=6, all_entries_day=400),
    )
    got = codes(make_intent("entry", at=T0 + timedelta(seconds=10)), state)
    assert got == ["REDUCING", "ENTRY_COOLDOWN", "BOT_ENTRIES_PER_HOUR", "ALL_ENTRIES_PER_DAY"]


# -- position rules: tranche cap, entry step, position size, no shorting ----------------------


@pytest.mark.parametrize(
    ("tranches", "in_flight", "expected"),
    [(1, 0, []), (2, 0, []), (3, 0, ["TRANCHE_CAP"]), (2, 1, ["TRANCHE_CAP", "ORDER_IN_FLIGHT"])],
)
def test_a_fourth_tranche_is_refused_counting_orders_in_flight(
    tranches: int, in_flight: int, expected: list[str]
) -> None:
    state = state_for(
        "add",
        position=replace(HOLDING, tranches=tranches),
        orders_in_flight=in_flight,
        entries_in_flight=in_flight,
    )
    assert sorted(codes(make_intent("add"), state)) == sorted(expected)


def test_the_tranche_cap_never_blocks_an_exit() -> None:
    state = state_for("exit", position=replace(HOLDING, tranches=3))
    assert codes(make_intent("exit"), state) == []


@pytest.mark.parametrize(
    ("price", "expected"),
    [("0.09", ["ADD_STEP"]), ("0.0882", []), ("0.0883", ["ADD_STEP"]), ("0.08", [])],
)
def test_an_add_needs_the_price_a_step_below_the_last_entry(price: str, expected) -> None:
    limits = replace(LIMITS, add_step_pct=D(2))  # last entry 0.09: an add at 0.0882 or lower
    assert codes(make_intent("add", price=price), state_for("add"), limits) == expected


def test_the_position_may_not_grow_past_its_maximum() -> None:
    limits = replace(LIMITS, max_position_notional=D("0.015"))
    # holds 0.1 at 0.09 = 0.009; another 0.01 makes 0.019
    assert codes(make_intent("add"), state_for("add"), limits) == ["POSITION_NOTIONAL"]
    assert codes(make_intent("add", size="0.005"), state_for("add"), limits) == []


def base_sized(action: str, order_type: str = "market", limit: str | None = None, **kw):
    """A buy sized in base: 1,000 ETH, "at" a reference price the intent itself names."""
    intent = make_intent(action, **kw)
    terms = {"quote_size": None, "base_size": D(1000), "order_type": order_type}
    if limit is not None:
        terms["limit_price"] = D(limit)
    return TradeIntent.model_validate(intent.model_dump() | terms)


@pytest.mark.parametrize("action", ["entry", "add"])
def test_a_market_buy_sized_in_base_is_refused_whatever_price_it_names(action: str) -> None:
    # 1,000 ETH at a made-up 0.00000001 passed every notional limit, and Coinbase bought 1,000.
    limits = replace(LIMITS, max_order_notional=D(1), max_position_notional=D(1))
    intent = base_sized(action, price="0.00000001")
    assert codes(intent, state_for(action), limits) == ["BUY_SIZED_IN_BASE"]


def test_a_limit_buy_sized_in_base_is_measured_at_its_limit_price() -> None:
    limits = replace(LIMITS, max_order_notional=D(1))
    cheap = base_sized("entry", "limit", limit="0.09", price="0.00000001")
    assert codes(cheap, state_for("entry"), limits) == ["ORDER_TOO_LARGE"]  # 1,000 at 0.09 = 90
    small = TradeIntent.model_validate(cheap.model_dump() | {"base_size": D("0.1")})
    assert codes(small, state_for("entry"), limits) == []  # 0.1 at 0.09 = 0.009


@pytest.mark.parametrize(
    ("size", "position", "expected_codes", "executed"),
    [
        ("0.1", HOLDING, [], "0.1"),
        ("0.05", HOLDING, [], "0.05"),
        ("0.5", HOLDING, [], "0.1"),
        ("0.1", Position(), ["NOTHING_TO_SELL"], None),
    ],
)
def test_no_shorting_an_exit_is_cut_to_the_position_or_refused(
    size: str, position: Position, expected_codes: list[str], executed: str | None
) -> None:
    decision = decide(
        make_intent("exit", size=size), state_for("exit", position=position), LIMITS, T0
    )
    assert [r.code for r in decision.reasons] == expected_codes  # fmt: skip
    if executed is None:
        assert decision.intent is None
    else:
        assert decision.intent is not None and decision.intent.base_size == D(executed)
        cut = [r.code for r in decision.adjustments]
        assert cut == (["EXIT_CUT_TO_POSITION"] if D(size) > position.quantity else [])


# -- market-data breakers: stale feed, price band, time to live --------------------------------


def test_a_stale_feed_stops_entries_but_not_exits() -> None:
    late = T0 + timedelta(minutes=5)
    assert codes(make_intent("entry"), state_for("entry", received_at=late)) == [
        "STALE_MARKET_DATA"
    ]
    assert codes(make_intent("exit"), state_for("exit", received_at=late)) == []
    fresh = T0 + timedelta(seconds=30)
    assert codes(make_intent("entry"), state_for("entry", received_at=fresh)) == []


@pytest.mark.parametrize(
    ("market", "expected"),
    [("0.09", []), ("0.094", []), ("0.0951", ["PRICE_BAND"]), ("0.085", ["PRICE_BAND"])],
)
def test_the_price_band_stops_an_entry_whose_price_moved_away(market: str, expected) -> None:
    state = state_for("entry", market=Market(price=D(market), time=T0))
    assert codes(make_intent("entry"), state) == expected


def test_an_intent_past_its_time_to_live_is_refused_for_every_action() -> None:
    newest = Market(price=D("0.09"), time=T0 + timedelta(minutes=6))
    assert codes(make_intent("entry"), state_for("entry", market=newest)) == ["INTENT_EXPIRED"]
    assert codes(make_intent("exit"), state_for("exit", market=newest)) == ["INTENT_EXPIRED"]


# -- production ramp ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "made", "size", "expected"),
    [
        ("production", 0, "0.01", ["PRODUCTION_RAMP"]),
        ("production", 0, "0.001", []),
        ("production", 3, "0.01", []),
        ("mock", 0, "0.01", []),
    ],
)
def test_the_first_production_entries_are_capped(mode, made, size, expected) -> None:
    limits = replace(LIMITS, ramp_trades=3, ramp_max_notional=D("0.002"))
    state = state_for("entry", mode=mode, production_entries=made)
    assert codes(make_intent("entry", size=size), state, limits) == expected


def test_client_order_id_is_derived_from_the_intent() -> None:
    assert client_order_id_for("intent-1") == client_order_id_for("intent-1")
    assert client_order_id_for("intent-1") != client_order_id_for("intent-2")


# -- an order the exchange has lost blocks its bot with that reason --------------------------


@pytest.mark.parametrize("action", ["entry", "exit"])
def test_an_order_the_exchange_lost_blocks_its_bot_naming_the_order_and_the_fix(
    action: str,
) -> None:
    lost = "tranche-bot-1-abc123"
    state = state_for(
        action,
        orders_in_flight=1,
        entries_in_flight=1 if action == "entry" else 0,
        unknown_at_exchange=(lost,),
    )
    (reason,) = decide(make_intent(action), state, LIMITS, T0).reasons
    assert reason.code == "ORDER_UNKNOWN_AT_EXCHANGE"
    assert lost in reason.message
    assert f"tranche orders resolve {lost}" in reason.message


def test_a_lost_order_and_another_in_flight_name_both() -> None:
    state = state_for("exit", orders_in_flight=2, unknown_at_exchange=("tranche-lost",))
    assert codes(make_intent("exit"), state) == ["ORDER_UNKNOWN_AT_EXCHANGE", "ORDER_IN_FLIGHT"]
