"""The board the dashboard and the terminal view share: what it keeps for the page beyond the
terminal view (tests/unit/test_live.py covers the rest through the terminal's rendering)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from services.dashboard.board import Board, StateReason, plain, pnl
from shared.contracts import Fill, InjectedSignal, SafetyEvent
from tests.unit.test_live import (
    BOT,
    PRODUCT,
    T0,
    approved,
    order_event,
    position,
    rejected,
    send,
    ticker,
)

D = Decimal
TICKER = f"tranche.market.ticker.{PRODUCT}"


def tick(board: Board, price: str, seconds: float) -> None:
    message = ticker(price).model_copy(update={"time": T0 + timedelta(seconds=seconds)})
    send(board, TICKER, message)


def test_each_ticker_adds_a_chart_point_at_its_event_time() -> None:
    board = Board()
    tick(board, "42000", 0)
    tick(board, "42010.5", 60)

    line = board.charts[PRODUCT]
    assert [(p.time, p.price) for p in line] == [
        (int(T0.timestamp()), D("42000")),
        (int(T0.timestamp()) + 60, D("42010.5")),
    ]


def test_two_ticks_in_one_second_leave_one_point_with_the_newer_price() -> None:
    board = Board()
    tick(board, "42000", 0)
    tick(board, "42001", 0.4)

    assert [p.price for p in board.charts[PRODUCT]] == [D("42001")]


def test_an_older_tick_does_not_go_back_in_time_on_the_chart() -> None:
    board = Board()
    tick(board, "42000", 60)
    tick(board, "41000", 0)

    assert [p.price for p in board.charts[PRODUCT]] == [D("42000")]
    # Nor in the card's last price and unrealized P&L: the ledger marks at the newest event time.
    assert board.prices[PRODUCT] == D("42000")


def test_the_chart_keeps_a_bounded_number_of_points() -> None:
    board = Board(chart_points=3)
    for n in range(10):
        tick(board, str(42000 + n), n)

    assert [p.price for p in board.charts[PRODUCT]] == [D("42007"), D("42008"), D("42009")]


def test_fills_become_entry_and_exit_marks() -> None:
    board = Board()
    buy = Fill(trade_id="t1", price=D("42000"), size=D("0.002"), fee=D("0.21"), time=T0)
    send(board, f"tranche.orders.events.{BOT}", order_event(1, "filled", [buy]))
    exit_event = order_event(2, "filled", []).model_copy(
        update={
            "action": "exit",
            "side": "sell",
            "fills": [
                Fill(trade_id="t2", price=D("43000"), size=D("0.001"), fee=D("0.1"), time=T0),
                Fill(trade_id="t3", price=D("43001"), size=D("0.001"), fee=D("0.1"), time=T0),
            ],
        }
    )
    send(board, f"tranche.orders.events.{BOT}", exit_event)

    marks = [(m.action, m.side, m.price, m.size) for m in board.marks[PRODUCT]]
    assert marks == [
        ("entry", "buy", D("42000"), D("0.002")),
        ("exit", "sell", D("43000"), D("0.001")),
        ("exit", "sell", D("43001"), D("0.001")),
    ]


def test_a_republished_fill_is_marked_once() -> None:
    board = Board()
    fill = Fill(trade_id="t1", price=D("42000"), size=D("0.002"), fee=D("0.21"), time=T0)
    send(board, f"tranche.orders.events.{BOT}", order_event(1, "filled", [fill]))
    send(board, f"tranche.orders.events.{BOT}", order_event(1, "filled", [fill]))

    assert len(board.marks[PRODUCT]) == 1


def test_chart_since_gives_only_what_is_newer() -> None:
    board = Board()
    tick(board, "42000", 0)
    seen = board.chart_seq
    tick(board, "42100", 60)
    fill = Fill(trade_id="t1", price=D("42100"), size=D("0.002"), fee=D("0"), time=T0)
    send(board, f"tranche.orders.events.{BOT}", order_event(1, "filled", [fill]))

    points, marks = board.chart_since(seen)
    assert [p.price for p in points[PRODUCT]] == [D("42100")]
    assert [m.price for m in marks[PRODUCT]] == [D("42100")]
    assert board.chart_since(board.chart_seq) == ({}, {})


def test_the_bots_last_decision_is_kept_with_its_reasons() -> None:
    board = Board()
    send(board, f"tranche.orders.approved.{BOT}", approved(1))
    send(board, f"tranche.orders.rejected.{BOT}", rejected(2))

    last = board.bots[BOT].last_decision
    assert [r.code for r in last.reasons] == ["COOLDOWN_ACTIVE", "DAILY_LIMIT_REACHED"]


def test_a_halt_for_everything_sets_the_system_state_with_its_reason() -> None:
    board = Board()
    event = SafetyEvent(
        message_id="halt-1",
        correlation_id="halt-1",
        time=T0,
        code="HALT",
        message="halt from the dashboard",
        state="halted",
        caused_by="dashboard (halt)",
    )
    send(board, "tranche.safety.events", event)

    assert board.system_state == "halted"
    assert board.system_reason.caused_by == "dashboard (halt)"
    assert board.bots == {}


def test_a_bots_halt_keeps_the_event_that_said_so() -> None:
    board = Board()
    event = SafetyEvent(
        message_id="halt-2",
        correlation_id="halt-2",
        time=T0,
        code="HALT",
        message="operator halt",
        bot_id=BOT,
        state="halted",
        caused_by="ops (halt)",
    )
    send(board, "tranche.safety.events", event)

    assert board.bots[BOT].trading_state == "halted"
    assert board.bots[BOT].state_reason.message == "operator halt"


def test_every_message_moves_the_version_so_views_know_to_redraw() -> None:
    board = Board()
    before = board.version
    send(board, f"tranche.ledger.positions.{BOT}", position())
    board.apply("tranche.nothing.x", b"{}")

    assert board.version == before + 2


def test_modes_are_those_the_messages_carried() -> None:
    board = Board()
    assert board.modes == set()
    send(board, f"tranche.orders.rejected.{BOT}", rejected())
    send(board, "tranche.orders.rejected.live-bot", rejected(2, "production", "live-bot"))

    assert board.modes == {"mock", "production"}


def test_figures_are_plain_decimals_and_pnl_is_signed_in_the_quote_currency() -> None:
    assert plain(D("4.2E+4")) == "42000"
    assert plain(D("0.123456789")) == "0.12345679"  # 8 places, half-even
    assert plain(None) == "—"
    assert pnl(D("-28.0625"), "BTC-USD") == ("-28.06", -1)
    assert pnl(D("0.000000004"), "ETH-BTC") == ("0", 0)  # rounds to nothing: no sign
    assert pnl(D("0.00060218"), "ETH-BTC") == ("+0.00060218", 1)
    assert pnl(None, "BTC-USD") == ("—", 0)


def test_a_state_read_at_start_fills_in_but_never_overrides_a_safety_event() -> None:
    board = Board()
    event = SafetyEvent(
        message_id="resume-1",
        correlation_id="resume-1",
        time=T0,
        code="RESUME",
        message="back to work",
        bot_id=BOT,
        state="active",
        caused_by="ops (resume)",
    )
    send(board, "tranche.safety.events", event)
    stale = StateReason("HALT", "read from /states", "ops (halt)")
    board.know_state(BOT, "halted", stale)
    board.know_state("other-bot", "halted", stale)
    board.know_state(None, "reducing", stale)

    assert board.bots[BOT].trading_state == "active"
    assert board.bots["other-bot"].trading_state == "halted"
    assert board.system_state == "reducing"


def test_operator_commands_and_ledger_queries_are_not_invalid_messages() -> None:
    """``tranche halt``/``mode`` (tranche.safety.control) and the README's
    ``nats req tranche.ledger.query.<bot>`` are requests to a service, not facts to show."""
    board = Board()
    board.apply("tranche.safety.control", b'{"command":"halt","caused_by":"me","token":"x"}')
    board.apply("tranche.safety.control", b'{"command":"mode","bot_id":"b","mode":"mock"}')
    board.apply(f"tranche.ledger.query.{BOT}", b"")
    board.apply(f"tranche.ledger.query.{BOT}", b'{"mode":"mock"}')
    assert board.invalid_messages == 0
    assert board.last_invalid is None
    board.apply("tranche.something.else", b"{}")
    assert board.invalid_messages == 1


def test_a_state_without_a_reason_shows_no_stray_punctuation() -> None:
    assert StateReason("", "", "").sentence() == ""
    assert StateReason("HALTED", "by hand", "").sentence() == "HALTED: by hand"
    assert StateReason("HALTED", "by hand", "ops").sentence() == "HALTED: by hand (by ops)"


def test_a_position_read_at_start_yields_to_a_newer_one_from_the_feed() -> None:
    board = Board()
    send(board, f"tranche.ledger.positions.{BOT}", position(sequence=3, quantity="0.003"))
    board.know_position(position(sequence=2, quantity="0.002"))
    assert board.bots[BOT].position.quantity == D("0.003")
    board.know_position(position(sequence=4, quantity="0.004"))
    assert board.bots[BOT].position.quantity == D("0.004")
    assert board.messages_seen == 1


def test_an_id_taken_on_another_subject_hides_nothing() -> None:
    """Holding the operator's credentials, an injected signal given the id the ledger's next
    position would carry (they are predictable) kept the page on the old position."""
    board = Board()
    send(board, f"tranche.ledger.positions.{BOT}", position(sequence=1, quantity="0.002"))
    injected = {"side": "sell", "message_id": "position-2"}
    send(board, f"tranche.signals.inject.{BOT}", InjectedSignal.model_validate(injected))
    send(board, f"tranche.ledger.positions.{BOT}", position(sequence=2, quantity="0.003"))
    assert board.bots[BOT].position.quantity == D("0.003")
    send(board, f"tranche.ledger.positions.{BOT}", position(sequence=2, quantity="0.003"))
    assert board.duplicates == 1  # the same id on the same subject is a repeat
