"""The page's HTML fragments: what a trader reads, escaped, formatted from Decimal."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from services.dashboard import views
from services.dashboard.board import Board, StateReason
from shared.contracts import Reason, SignalEvaluation
from shared.stops import read_stops
from tests.unit.test_live import BOT, PRODUCT, T0, position, rejected, send, ticker

D = Decimal


def test_a_rejection_shows_every_reason_on_the_bots_card_and_in_the_feed() -> None:
    board = Board()
    send(board, f"tranche.orders.rejected.{BOT}", rejected())

    card = views.bots(board)
    feed = views.feed(board)
    for text in ("COOLDOWN_ACTIVE", "DAILY_LIMIT_REACHED", "5 of 5 entries today"):
        assert text in card
        assert text in feed
    assert "REJECTED" in card
    assert "REJECTED" in feed


def test_a_position_shows_its_figures_tranches_and_unrealized_pnl() -> None:
    board = Board()
    send(board, f"tranche.ledger.positions.{BOT}", position())
    send(board, f"tranche.market.ticker.{PRODUCT}", ticker("45000.50"))

    card = views.bots(board)
    assert 'data-status="open"' in card
    assert 'data-quantity="0.002"' in card
    assert "42105" in card  # break-even
    assert '<span class="pnl loss">-28.06</span>' in card  # realized
    assert '<span class="pnl gain">+5.79</span>' in card  # 0.002 × 45000.50 − 84.21
    assert card.count("<tr><td>1</td>") == 1  # one tranche row
    assert "last 45000.5" in card


def test_an_evaluation_shows_direction_score_temperature_band_and_confirmations() -> None:
    board = Board()
    evaluation = SignalEvaluation(
        bot_id=BOT,
        product_id=PRODUCT,
        time=T0,
        direction="buy",
        temperature=D("64"),
        band="warm",
        score=D("0.4213"),
        confirmations=1,
        confirmations_needed=2,
        reason=Reason(code="MOMENTUM_UP", message="price above its mean"),
    )
    send(board, f"tranche.signals.evaluated.{BOT}", evaluation)

    card = views.bots(board)
    assert "score 0.4213" in card
    assert "temperature 64" in card
    assert 'class="band band-warm"' in card
    assert '<span class="confirmations">1/2</span>' in card
    assert "confirm-timer" not in card  # no seconds to hold: no timer

    timed = evaluation.model_copy(
        update={
            "time": T0 + timedelta(seconds=45),
            "confirming_since": T0,
            "confirm_seconds": 120,
            "confirmations": 2,
        }
    )
    send(board, f"tranche.signals.evaluated.{BOT}", timed)
    assert "held 45s of 2m00s" in views.bots(board)


def test_production_is_unmistakable_and_mock_is_said_plainly() -> None:
    mock = Board()
    send(mock, f"tranche.orders.rejected.{BOT}", rejected())
    production = Board()
    send(
        production, "tranche.orders.rejected.live-bot", rejected(mode="production", bot="live-bot")
    )

    assert 'data-mode="mock"' in views.header(mock, "mock")
    assert "PRODUCTION" not in views.header(mock, "mock")
    banner = views.header(production, "mock")
    assert 'class="mode production"' in banner
    assert "PRODUCTION — real money" in banner
    assert '<span class="badge production">PRODUCTION</span>' in views.bots(production)


def test_before_any_message_the_configured_mode_is_shown_as_configured_only() -> None:
    assert "MOCK configured" in views.header(Board(), "mock")
    assert 'class="mode production"' in views.header(Board(), "production")


def test_text_from_messages_is_escaped_never_markup() -> None:
    board = Board()
    hostile = rejected().model_copy(
        update={"reasons": [Reason(code="BAD_IDEA", message="<script>alert(1)</script>")]}
    )
    send(board, f"tranche.orders.rejected.{BOT}", hostile)

    for fragment in (views.bots(board), views.feed(board)):
        assert "<script>" not in fragment
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in fragment


def test_the_state_badge_says_unknown_until_safety_said_something() -> None:
    board = Board()
    send(board, f"tranche.orders.rejected.{BOT}", rejected())

    assert 'data-state="unknown"' in views.bots(board)


def test_controls_are_on_every_card_but_carry_no_token() -> None:
    board = Board()
    send(board, f"tranche.orders.rejected.{BOT}", rejected())

    card = views.bots(board)
    assert f'hx-post="/control/halt/{BOT}"' in card
    assert f'hx-post="/control/resume/{BOT}"' in card
    assert f'hx-post="/control/halt-cancel-stops/{BOT}"' in card  # tranche halt --cancel-stops
    assert "Bearer" not in card


def test_health_shows_the_exchange_as_the_executor_sees_it() -> None:
    refused = '{"status": "not ready", "checks": {"exchange": "failing: ExchangeNotReady: '
    refused += 'refused: coinbase get_order: HTTP 401"}}'
    degraded = '{"status": "ready", "checks": {"exchange": "ok (degraded: HTTP 429)"}}'
    shown = views.health({"executor": (False, refused)})
    assert "exchange refused: coinbase get_order: HTTP 401" in shown
    assert "exchange degraded: HTTP 429" in views.health({"executor": (True, degraded)})
    plain = '{"status": "ready", "checks": {"exchange": "ok"}}'
    assert "service exchange" not in views.health({"executor": (True, plain)})


def test_health_says_which_service_is_not_ready() -> None:
    shown = views.health({"signal": (True, "ok"), "ledger": (False, "unreachable: ConnectError")})

    assert 'data-service="signal"' in shown
    assert "signal ready" in shown
    assert "ledger NOT READY" in shown
    assert 'title="unreachable: ConnectError"' in shown


def test_a_position_links_to_the_bots_closed_positions_and_their_csv() -> None:
    board = Board()
    send(board, f"tranche.ledger.positions.{BOT}", position())
    card = views.bots(board)
    assert f'href="/history/{BOT}?mode=mock"' in card
    assert f'href="/history/{BOT}.csv?mode=mock" download' in card


def test_a_replay_audit_record_on_the_dead_letter_stream_is_not_an_invalid_message() -> None:
    board = Board()
    board.apply("tranche.dlq.replays", b'{"letter_id": "dlq-ledger-1"}')
    assert board.invalid_messages == 0


def test_a_state_read_with_empty_reason_shows_no_stray_by() -> None:
    board = Board()
    board.know_state(None, "active", StateReason("", "", ""))
    board.know_state(BOT, "active", StateReason("", "", ""))
    send(board, f"tranche.orders.rejected.{BOT}", rejected())
    page = views.header(board, "mock") + views.bot_card(board, board.bots[BOT])
    assert "(by )" not in page
    assert ": (by" not in page


def stop_answers(size: str = "0.002") -> tuple[tuple[int, list], tuple[int, list]]:
    """The signal service's and the executor's ``GET /stops``: one stop asked and live."""
    asked = [{"bot_id": BOT, "product_id": PRODUCT, "holding": "0.002", "wanted_size": "0.002",
              "stop_price": "41263.00", "limit_price": "41056.00", "intent_id": "stop:x:1:1",
              "reason": {"code": "STOP_ON_EXCHANGE", "message": "protective stop"}}]  # fmt: skip
    held = [{"bot_id": BOT, "client_order_id": "stop-cid-1", "intent_id": "stop:x:1:1",
             "status": "resting", "order_status": "open", "size": size,
             "stop_price": "41263.00", "limit_price": "41056.00"}]  # fmt: skip
    return (200, asked), (200, held)


def test_a_bots_live_stop_on_the_exchange_shows_its_size_against_the_holding() -> None:
    board = Board()
    send(board, f"tranche.ledger.positions.{BOT}", position())
    states, unread = read_stops(*stop_answers(), board.holdings())
    assert board.know_stops(states, unread) is True
    card = views.bots(board)
    assert 'data-state="live"' in card and "stop-cid-1" in card
    assert "sell <b>0.002</b> of 0.002 at stop 41263 (limit 41056)" in card
    assert "WRONG SIZE" not in card
    assert board.know_stops(states, unread) is False  # the same again: nothing to redraw

    states, unread = read_stops(*stop_answers("0.001"), board.holdings())
    board.know_stops(states, unread)
    assert "WRONG SIZE" in views.bots(board)


def test_a_bot_without_a_stop_shows_why_and_an_unread_service_keeps_what_was_read() -> None:
    board = Board()
    send(board, f"tranche.ledger.positions.{BOT}", position())
    why = {"code": "STOP_ENDED", "message": "no stop: a halt cancelled it"}
    asked = [{"bot_id": BOT, "product_id": PRODUCT, "holding": "0.002", "reason": why}]
    board.know_stops(*read_stops((200, asked), (200, []), board.holdings()))
    card = views.bots(board)
    assert 'data-state="none"' in card and "STOP_ENDED: no stop: a halt cancelled it" in card

    board.know_stops(*read_stops((200, []), (None, "unreachable: ConnectError"), {}))
    card = views.bots(board)
    assert 'data-state="none"' in card  # kept: the executor could not be read
    assert "as last read: executor: unreachable: ConnectError" in card
    board.know_stops(*read_stops((200, []), (200, []), {}))
    assert "exchange-stop" not in views.bots(board)  # no longer judged: nothing to show
