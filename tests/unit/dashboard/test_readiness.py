"""The readiness safety publishes, on the board and on the bot's card: could it trade now, why
not, and how long its cooldowns still run (in the event time the board has seen)."""

from __future__ import annotations

import io
from datetime import timedelta

from rich.console import Console

from services.dashboard import views
from services.dashboard.board import Board
from shared.contracts import BotChanged, BotReadiness, ReadinessBlock
from tests.unit.test_live import BOT, PRODUCT, T0, send, ticker
from tranche.live import render

SUBJECT = f"tranche.safety.readiness.{BOT}"
UNTIL = T0 + timedelta(minutes=5)


def readiness(at=T0, **changes) -> BotReadiness:
    in_flight = ReadinessBlock(code="ORDER_IN_FLIGHT", message="1 order(s) not yet final")
    cooling = ReadinessBlock(code="ENTRY_COOLDOWN", message="entries are 5m00s apart", until=UNTIL)
    fields = {
        "bot_id": BOT,
        "product_id": PRODUCT,
        "mode": "mock",
        "time": at,
        "trading_state": "active",
        "can_enter": False,
        "entry_blocks": [cooling, in_flight],
        "can_exit": False,
        "exit_blocks": [in_flight],
        "entry_cooldown_until": UNTIL,
        "tranches": 1,
        "max_tranches": 3,
        "orders_in_flight": 1,
    }
    return BotReadiness(**(fields | changes))


def tick_at(board: Board, at) -> None:
    send(board, f"tranche.market.ticker.{PRODUCT}", ticker("42000").model_copy(update={"time": at}))


def test_readiness_names_every_block_and_the_cooldown_left() -> None:
    board = Board()
    send(board, SUBJECT, readiness())
    tick_at(board, T0 + timedelta(minutes=2))
    now = board.readiness_now(BOT)
    assert now is not None and not now.can_enter and not now.can_exit
    assert [b.code for b in now.entry_blocks] == ["ENTRY_COOLDOWN", "ORDER_IN_FLIGHT"]
    assert now.entry_cooldown_left == timedelta(minutes=3)
    card = views.bots(board)
    assert 'data-can-enter="no"' in card and "ORDER_IN_FLIGHT" in card
    assert "entry cooldown <b>3m00s</b> left (until 12:05:00)" in card
    assert "no exit cooldown" in card


def test_a_cooldown_passed_in_event_time_no_longer_blocks() -> None:
    board = Board()
    calm = readiness(entry_blocks=readiness().entry_blocks[:1], exit_blocks=[], can_exit=True)
    send(board, SUBJECT, calm)
    assert not board.readiness_now(BOT).can_enter
    tick_at(board, UNTIL)
    now = board.readiness_now(BOT)
    assert now.can_enter and now.entry_blocks == () and now.entry_cooldown_until is None
    card = views.bots(board)
    assert 'data-can-enter="yes"' in card and 'data-can-exit="yes"' in card
    assert "no entry cooldown" in card


def test_an_older_readiness_never_replaces_a_newer_one() -> None:
    board = Board()
    send(board, SUBJECT, readiness(at=T0 + timedelta(minutes=1), can_enter=True, entry_blocks=[]))
    board.know_readiness(readiness(at=T0))
    assert board.readiness_now(BOT).can_enter
    send(board, SUBJECT, readiness(at=T0 + timedelta(minutes=1), trading_state="halted"))
    assert board.bots[BOT].readiness.trading_state == "halted", "same time: the later word wins"


def test_a_bot_safety_never_judged_says_so() -> None:
    board = Board()
    tick_at(board, T0)
    send(board, f"tranche.market.ticker.{PRODUCT}", ticker("1"))
    assert board.readiness_now(BOT) is None
    assert "safety has not judged this bot yet" in views._readiness(None)


def test_a_readiness_on_another_bots_subject_is_refused() -> None:
    board = Board()
    send(board, "tranche.safety.readiness.someone-else", readiness())
    assert board.invalid_messages == 1 and board.readiness_now(BOT) is None


def test_the_terminal_view_says_whether_the_bot_could_enter() -> None:
    def screen(board: Board) -> str:
        console = Console(record=True, width=400, file=io.StringIO())
        console.print(render(board))
        return console.export_text()

    board = Board()
    send(board, SUBJECT, readiness())
    tick_at(board, T0 + timedelta(minutes=2))
    assert "no: ENTRY_COOLDOWN ORDER_IN_FLIGHT (180 s left)" in screen(board)
    send(board, SUBJECT, readiness(at=UNTIL, can_enter=True, entry_blocks=[]))
    assert "no: " not in screen(board) and " yes " in screen(board)


def test_a_paused_bot_says_so_and_an_older_announcement_never_wins() -> None:
    def changed(status: str, revision: int) -> BotChanged:
        return BotChanged(
            message_id=f"bot-{BOT}-r{revision}", correlation_id="c", time=T0, bot_id=BOT,
            change="paused" if status == "paused" else "resumed", revision=revision,
            status=status, changed_by="ops",
        )  # fmt: skip

    board = Board()
    send(board, "tranche.bots.changed", changed("paused", 3))
    assert board.invalid_messages == 0
    assert 'data-bot-status="paused"' in views.bots(board)
    send(board, "tranche.bots.changed", changed("active", 2))
    assert board.bots[BOT].bot_status == "paused"
    send(board, "tranche.bots.changed", changed("active", 4))
    assert "data-bot-status" not in views.bots(board)


def test_the_card_names_an_order_the_exchange_lost_and_how_to_settle_it() -> None:
    lost = ReadinessBlock(
        code="ORDER_UNKNOWN_AT_EXCHANGE",
        message="bot b's order tranche-x is unknown at the exchange; settle it by hand: "
        "tranche orders resolve tranche-x --as cancelled|filled --reason ...",
    )
    board = Board()
    send(board, SUBJECT, readiness(entry_blocks=[lost], exit_blocks=[lost],
                                   entry_cooldown_until=None))  # fmt: skip
    card = views.bots(board)
    assert 'data-can-enter="no"' in card and 'data-can-exit="no"' in card
    assert "ORDER_UNKNOWN_AT_EXCHANGE" in card and "tranche orders resolve tranche-x" in card
