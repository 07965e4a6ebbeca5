"""A readiness pass reads the facts of every bot it assesses at once (services/safety/facts.py),
on SQLite and PostgreSQL: each bot must still be judged on its own facts, exactly as if it
were assessed alone, whatever the other bots hold."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session

from services.safety.bench import T0, order_event, order_intent, position_after
from services.safety.config import SafetySettings
from services.safety.handlers import (
    decide_and_store,
    readiness_of,
    record_order_event,
    record_position,
)
from services.safety.readiness import BotClock
from services.safety.store import TradingStateRow
from shared.contracts import BotReadiness, OrderApproved
from shared.db import READ_ONLY


def test_each_bot_of_a_readiness_pass_is_judged_on_its_own_facts(
    database_url: str, safety_run, engine
) -> None:
    settings = SafetySettings(database_url=database_url, entry_cooldown_s=300)
    filled_at = T0 + timedelta(minutes=1)

    def entered(bot_id: str) -> OrderApproved:
        intent = order_intent(bot_id, 0, T0)
        approval = safety_run(
            lambda s: decide_and_store(s, intent, settings, positions_synced=True, markets={})
        )
        assert isinstance(approval, OrderApproved)
        return approval

    def filled(approval: OrderApproved) -> None:
        event = order_event(approval, "filled", filled_at)
        safety_run(lambda s: record_order_event(s, event, settings))

    # holding: entered and filled, the ledger's position in; its cooldown runs from the fill.
    holding = entered("holding")
    filled(holding)
    position = position_after(holding, 1, filled_at)
    safety_run(lambda s: record_position(s, position, settings))
    # waiting: its entry is still at the exchange.
    entered("waiting")
    # behind: filled, but the ledger's position has not come yet (unknown: no trade).
    filled(entered("behind"))
    # halted: nothing of its own but a halt. calm: nothing at all.
    safety_run(lambda s: s.add(TradingStateRow(scope="halted", state="halted", message="desk")))

    bots = {"holding", "waiting", "behind", "halted", "calm"}
    now = T0 + timedelta(minutes=2)
    clocks = {bot: BotClock(product_id="ETH-BTC", time=now) for bot in bots}
    reader = engine.execution_options(**{READ_ONLY: True})

    def assess(bot_ids: set[str]) -> dict[str, BotReadiness]:
        with Session(reader) as session:
            found = readiness_of(session, bot_ids, clocks, settings, positions_synced=True,
                                 markets={})  # fmt: skip
        return {readiness.bot_id: readiness for readiness in found}

    together = assess(bots)
    assert together == {bot: assess({bot})[bot] for bot in bots}

    def entry_blocks(bot: str) -> set[str]:
        return {block.code for block in together[bot].entry_blocks}

    assert together["calm"].can_enter and together["calm"].tranches == 0
    assert entry_blocks("holding") == {"ENTRY_COOLDOWN"} and together["holding"].can_exit
    assert together["holding"].entry_cooldown_until == filled_at + timedelta(minutes=5)
    assert together["holding"].tranches == 1
    assert "ORDER_IN_FLIGHT" in entry_blocks("waiting")
    assert together["waiting"].orders_in_flight == 1
    assert "POSITION_UNKNOWN" in entry_blocks("behind") and together["behind"].tranches is None
    assert together["halted"].trading_state == "halted"
    assert "HALTED" in entry_blocks("halted") and not together["halted"].can_exit


def test_a_decision_counts_every_bots_entries_of_the_hour_and_of_the_day(
    database_url: str, safety_run
) -> None:
    settings = SafetySettings(database_url=database_url, entry_cooldown_s=0)

    def decide_at(bot_id: str, round_: int, at):
        intent = order_intent(bot_id, round_, at)
        return safety_run(
            lambda s: decide_and_store(s, intent, settings, positions_synced=True, markets={})
        )

    decide_at("yesterday", 0, T0 - timedelta(hours=25))  # out of the day's window
    decide_at("earlier", 0, T0 - timedelta(hours=2))  # in the day, not the hour
    decide_at("recent", 0, T0 - timedelta(minutes=30))
    fresh = decide_at("fresh", 0, T0)
    assert fresh.counters["all_entries_hour"] == "1"
    assert fresh.counters["all_entries_day"] == "2"
    assert fresh.counters["bot_entries_day"] == "0"
    again = decide_at("recent", 2, T0)  # its first entry is still at the exchange: refused
    assert again.counters["all_entries_hour"] == "2"
    assert again.counters["all_entries_day"] == "3"
    assert again.counters["bot_entries_hour"] == again.counters["bot_entries_day"] == "1"
    assert again.counters["bot_notional_day"] == "0.01"
