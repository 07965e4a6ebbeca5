"""Safety's loss breakers take realized P&L from the ledger's position messages, never from
their own arithmetic, whichever of the order event and the position reaches safety first
(straight on the database, SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlmodel import Session, select

from services.safety.config import SafetySettings
from services.safety.handlers import record_order_event, record_position
from services.safety.store import DecisionRow
from shared.contracts import Fill, OrderEvent, PositionUpdate

T0 = datetime(2018, 1, 20, 12, 0, tzinfo=UTC)
D = Decimal


def approved_exit(bot: str, cid: str, at: datetime = T0) -> DecisionRow:
    return DecisionRow(
        intent_id=f"i-{cid}", bot_id=bot, mode="mock", action="exit", approved=True,
        client_order_id=cid, market_time=at, decided_at=at, order_status="approved", final=False,
        cost_per_unit=D("0.09"),  # what the old arithmetic would have used: -0.002 here
    )  # fmt: skip


def filled(bot: str, cid: str, at: datetime = T0) -> OrderEvent:
    return OrderEvent(
        message_id=f"order-{cid}-filled", correlation_id=cid, time=at, bot_id=bot,
        product_id="ETH-BTC", mode="mock", intent_id=f"i-{cid}", client_order_id=cid,
        action="exit", side="sell", status="filled", filled_size=D("0.1"),
        fills=[Fill(trade_id=f"t-{cid}", price=D("0.07"), size=D("0.1"), fee=D(0), time=at)],
    )  # fmt: skip


def position(bot: str, sequence: int, realized_total: str, at: datetime = T0) -> PositionUpdate:
    return PositionUpdate(
        message_id=f"p-{bot}-{sequence}", correlation_id="c", time=at, bot_id=bot,
        product_id="ETH-BTC", mode="mock", position_id=None, status="flat", quantity=D(0),
        average_entry_price=None, break_even_price=None, cost_basis=D(0), realized_pnl=D(0),
        fees_paid=D(0), tranches=[], sequence=sequence, realized_pnl_total=D(realized_total),
    )  # fmt: skip


@pytest.mark.parametrize("position_first", [True, False])
def test_an_exit_is_judged_on_the_ledgers_realized_pnl(
    safety_run, database_url, position_first
) -> None:
    settings = SafetySettings(database_url=database_url, losing_exits_in_a_row=1)
    bot = "fifo-bot"

    def setup(session: Session) -> None:
        session.add(approved_exit(bot, "c1"))

    safety_run(setup)
    safety_run(lambda s: record_position(s, position(bot, 0, "-1"), settings))  # the baseline
    steps = [
        lambda s: record_position(s, position(bot, 1, "-1.005"), settings),
        lambda s: record_order_event(s, filled(bot, "c1"), settings),
    ]
    if not position_first:
        steps.reverse()
    trips = [event for step in steps for event in safety_run(step)]
    assert [t.code for t in trips] == ["LOSING_STREAK"]
    assert "-0.005" in trips[0].message
    row = safety_run(
        lambda s: s.exec(select(DecisionRow).where(DecisionRow.client_order_id == "c1")).one()
    )
    assert row.realized_pnl == D("-0.005")


def test_a_realized_change_without_an_approved_exit_counts_for_nothing(
    safety_run, database_url
) -> None:
    settings = SafetySettings(database_url=database_url, losing_exits_in_a_row=1)
    safety_run(lambda s: record_position(s, position("lone", 0, "0"), settings))
    assert safety_run(lambda s: record_position(s, position("lone", 1, "-3"), settings)) == []


def test_the_all_bots_breaker_adds_every_bots_losses_of_the_last_day_only(
    safety_run, database_url
) -> None:
    settings = SafetySettings(
        database_url=database_url, losing_exits_in_a_row=None, daily_loss_all_bots=D("0.01")
    )

    def lose(bot: str, total: str, at: datetime) -> list:
        """The bot's exit filled at ``at``, its position realizing the loss to ``total``."""
        safety_run(lambda s: s.add(approved_exit(bot, f"c-{bot}", at)))
        safety_run(lambda s: record_position(s, position(bot, 0, "0", at), settings))
        trips = safety_run(lambda s: record_position(s, position(bot, 1, total, at), settings))
        return trips + safety_run(
            lambda s: record_order_event(s, filled(bot, f"c-{bot}", at), settings)
        )

    # Two days ago: no longer counted. Then two bots lose 0.006 each within the day: 0.012.
    assert lose("old", "-0.008", T0 - timedelta(days=2)) == []
    assert lose("first", "-0.006", T0) == []
    trips = lose("second", "-0.006", T0 + timedelta(minutes=1))
    assert [(t.code, t.bot_id) for t in trips] == [("DAILY_LOSS_ALL_BOTS", None)]
    assert "0.012" in trips[0].message
