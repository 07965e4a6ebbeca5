"""The live view's state and rendering, fed with real contract JSON; no NATS involved."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
from rich.console import Console

from services.dashboard.feed import read_positions, read_states
from shared.contracts import (
    DeadLetter,
    Fill,
    OrderApproved,
    OrderEvent,
    OrderRejected,
    PositionUpdate,
    Reason,
    SafetyEvent,
    SignalEvaluation,
    Ticker,
    TradeIntent,
    TrancheView,
)
from tranche.live import LiveState, PlainLines, render

D = Decimal
T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
BOT = "btc-momentum"
PRODUCT = "BTC-USD"


def send(state: LiveState, subject: str, model) -> None:
    state.apply(subject, model.model_dump_json().encode())


def screen(state: LiveState) -> str:
    console = Console(record=True, width=160, file=io.StringIO())
    console.print(render(state))
    return console.export_text()


def intent(n: int = 1, bot: str = BOT) -> TradeIntent:
    return TradeIntent(
        message_id=f"intent-{n}",
        correlation_id=f"i{n}",
        time=T0,
        intent_id=f"i{n}",
        signal_id=f"s{n}",
        bot_id=bot,
        product_id=PRODUCT,
        action="entry",
        side="buy",
        quote_size=D("100"),
        temperature=D("82"),
        band="hot",
        reason=Reason(code="SIGNAL_CONFIRMED", message="momentum up, confirmed twice"),
    )


def rejected(n: int = 1, mode: str = "mock", bot: str = BOT) -> OrderRejected:
    return OrderRejected(
        message_id=f"rejected-{n}",
        correlation_id=f"i{n}",
        time=T0,
        intent=intent(n, bot),
        mode=mode,
        reasons=[
            Reason(code="COOLDOWN_ACTIVE", message="last entry 30 s ago, cooldown 300 s"),
            Reason(code="DAILY_LIMIT_REACHED", message="5 of 5 entries today"),
        ],
        decided_at=T0 + timedelta(seconds=n),
    )


def approved(n: int = 1) -> OrderApproved:
    return OrderApproved(
        message_id=f"approved-{n}",
        correlation_id=f"i{n}",
        time=T0,
        intent=intent(n),
        client_order_id=f"order-{n}",
        mode="mock",
        decided_at=T0,
    )


def order_event(n: int, status: str, fills: list[Fill] | None = None) -> OrderEvent:
    return OrderEvent(
        message_id=f"event-{n}-{status}",
        correlation_id=f"i{n}",
        time=T0,
        bot_id=BOT,
        product_id=PRODUCT,
        mode="mock",
        intent_id=f"i{n}",
        client_order_id=f"order-{n}",
        action="entry",
        side="buy",
        status=status,
        fills=fills or [],
        filled_size=sum((f.size for f in fills or []), D("0")),
    )


def position(sequence: int = 1, quantity: str = "0.002", mode: str = "mock") -> PositionUpdate:
    return PositionUpdate(
        message_id=f"position-{sequence}",
        correlation_id="i1",
        time=T0,
        bot_id=BOT,
        product_id=PRODUCT,
        mode=mode,
        position_id="p1",
        status="open",
        quantity=D(quantity),
        average_entry_price=D("42000.00"),
        break_even_price=D("42105.00"),
        cost_basis=D("84.21"),
        realized_pnl=D("-28.0625"),
        fees_paid=D("0.21"),
        tranches=[
            TrancheView(
                index=1,
                client_order_id="order-1",
                entry_price=D("42000.00"),
                size=D(quantity),
                remaining_size=D(quantity),
                fees=D("0.21"),
                realized_pnl=D("0"),
            )
        ],
        sequence=sequence,
    )


def ticker(price: str) -> Ticker:
    return Ticker(product_id=PRODUCT, price=D(price), time=T0)


def test_rejection_reasons_reach_the_feed() -> None:
    state = LiveState()
    send(state, f"tranche.orders.rejected.{BOT}", rejected())

    codes = [reason.code for reason in state.decisions[-1].reasons]
    assert codes == ["COOLDOWN_ACTIVE", "DAILY_LIMIT_REACHED"]
    text = screen(state)
    assert "COOLDOWN_ACTIVE" in text
    assert "DAILY_LIMIT_REACHED" in text
    assert "5 of 5 entries today" in text


def test_position_update_shows_quantity_and_average_entry() -> None:
    state = LiveState()
    send(state, f"tranche.ledger.positions.{BOT}", position())

    kept = state.bots[BOT].position
    assert kept.quantity == D("0.002")
    assert kept.average_entry_price == D("42000.00")
    text = screen(state)
    assert "open 0.002" in text
    assert "42000" in text  # the wire drops trailing zeros, never digits
    assert "-28.06" in text  # realized P&L in cents, rounded half-even, no float noise


def test_unrealized_pnl_uses_the_latest_ticker() -> None:
    state = LiveState()
    send(state, f"tranche.ledger.positions.{BOT}", position())
    send(state, f"tranche.market.ticker.{PRODUCT}", ticker("41000"))
    send(state, f"tranche.market.ticker.{PRODUCT}", ticker("45000.50"))

    # 0.002 × 45000.50 − 84.21, exactly
    assert state.unrealized_pnl(BOT) == D("5.791")
    assert "+5.79" in screen(state)


def test_unrealized_pnl_is_unknown_until_a_price_arrives() -> None:
    state = LiveState()
    send(state, f"tranche.ledger.positions.{BOT}", position())

    assert state.unrealized_pnl(BOT) is None


def test_invalid_payloads_and_unknown_subjects_are_counted_not_raised() -> None:
    state = LiveState()
    state.apply(f"tranche.orders.rejected.{BOT}", b"{not json")
    state.apply(f"tranche.orders.rejected.{BOT}", b'{"mode": "mock"}')
    state.apply("tranche.something.else.x", ticker("1").model_dump_json().encode())
    state.apply(f"tranche.market.ticker.{PRODUCT}", b'{"product_id": "BTC-USD", "price": 1.5}')
    state.apply("tranche.market.ticker.ETH-USD", ticker("1").model_dump_json().encode())
    state.apply(f"tranche.market.ticker.{PRODUCT}", b"\xff\xfe")

    assert state.invalid_messages == 6
    assert state.messages_seen == 6
    assert state.last_invalid.startswith(f"tranche.market.ticker.{PRODUCT}")
    send(state, f"tranche.market.ticker.{PRODUCT}", ticker("42000"))
    assert state.prices[PRODUCT] == D("42000")
    assert "invalid: 6" in screen(state)


def test_feed_is_bounded() -> None:
    state = LiveState(feed_size=3)
    for n in range(1, 11):
        send(state, f"tranche.orders.rejected.{BOT}", rejected(n))

    assert [d.message_id for d in state.decisions] == ["rejected-8", "rejected-9", "rejected-10"]


def test_a_republished_message_is_shown_once() -> None:
    state = LiveState()
    send(state, f"tranche.orders.rejected.{BOT}", rejected())
    send(state, f"tranche.orders.rejected.{BOT}", rejected())

    assert len(state.decisions) == 1
    assert state.duplicates == 1


def test_an_older_position_does_not_replace_a_newer_one() -> None:
    state = LiveState()
    send(state, f"tranche.ledger.positions.{BOT}", position(sequence=5, quantity="0.003"))
    send(state, f"tranche.ledger.positions.{BOT}", position(sequence=4, quantity="0.002"))

    assert state.bots[BOT].position.quantity == D("0.003")


def test_an_approval_is_the_open_order_until_its_final_event() -> None:
    state = LiveState()
    send(state, f"tranche.orders.approved.{BOT}", approved())
    assert state.bots[BOT].open_order.client_order_id == "order-1"

    send(state, f"tranche.orders.events.{BOT}", order_event(1, "open"))
    assert state.bots[BOT].open_order.status == "open"

    fill = Fill(trade_id="t1", price=D("42000.00"), size=D("0.002"), fee=D("0.21"), time=T0)
    send(state, f"tranche.orders.events.{BOT}", order_event(1, "filled", [fill]))
    assert state.bots[BOT].open_order is None
    assert [e.status for e in state.orders] == ["open", "filled"]
    text = screen(state)
    assert "0.002 @ 42000 fee 0.21" in text
    assert "approved" in text


def test_render_shows_bot_rejection_code_and_mock_mode() -> None:
    state = LiveState()
    send(state, f"tranche.orders.rejected.{BOT}", rejected())

    text = screen(state)
    assert BOT in text
    assert "COOLDOWN_ACTIVE" in text
    assert "MOCK" in text
    assert "PRODUCTION" not in text


def test_production_mode_is_unmistakable() -> None:
    state = LiveState()
    send(state, "tranche.orders.rejected.live-bot", rejected(mode="production", bot="live-bot"))

    assert "PRODUCTION" in screen(state)
    header = render(state).renderables[0]
    assert any(span.style == "bold red reverse" for span in header.spans)


def test_mode_is_unknown_until_a_message_carries_it() -> None:
    state = LiveState()
    send(state, f"tranche.intents.{BOT}", intent())

    text = screen(state)
    assert "mode unknown" in text
    assert BOT in text


def test_a_production_message_clears_the_bots_mock_position() -> None:
    state = LiveState()
    send(state, f"tranche.ledger.positions.{BOT}", position())
    send(state, f"tranche.orders.rejected.{BOT}", rejected(mode="production"))

    assert state.bots[BOT].mode == "production"
    assert state.bots[BOT].position is None


def test_signal_evaluation_shows_direction_temperature_and_band() -> None:
    state = LiveState()
    evaluation = SignalEvaluation(
        bot_id=BOT,
        product_id=PRODUCT,
        time=T0,
        direction="buy",
        temperature=D("64"),
        band="warm",
        confirmations=1,
        confirmations_needed=2,
        reason=Reason(code="MOMENTUM_UP", message="price above its 20-period mean"),
    )
    send(state, f"tranche.signals.evaluated.{BOT}", evaluation)

    assert state.bots[BOT].evaluation.band == "warm"
    assert "buy 64 warm 1/2" in screen(state)


def test_dead_letters_show_subject_and_reason_codes() -> None:
    state = LiveState()
    letter = DeadLetter(
        message_id="dl-1",
        service="safety",
        subject=f"tranche.intents.{BOT}",
        payload="{}",
        payload_base64="e30=",
        error="validation failed",
        reasons=[Reason(code="INVALID_MESSAGE", message="intent_id: field required")],
        time=T0,
    )
    send(state, "tranche.dlq.safety", letter)

    text = screen(state)
    assert f"tranche.intents.{BOT}" in text
    assert "INVALID_MESSAGE" in text


def test_safety_events_set_the_bots_trading_state() -> None:
    state = LiveState()
    event = SafetyEvent(
        message_id="safety-1",
        correlation_id="safety-1",
        time=T0,
        code="BREAKER_TRIPPED",
        message="3 losses in a row",
        bot_id=BOT,
        state="reducing",
        caused_by="breaker:consecutive_losses",
    )
    send(state, "tranche.safety.events", event)

    assert state.bots[BOT].trading_state == "reducing"
    assert "BREAKER_TRIPPED" in screen(state)


def test_amounts_are_shown_in_plain_notation_never_exponents() -> None:
    state = LiveState()
    fill = Fill(trade_id="t1", price=D("4.2E+4"), size=D("1E-8"), fee=D("0E-8"), time=T0)
    send(state, f"tranche.orders.events.{BOT}", order_event(1, "filled", [fill]))

    text = screen(state)
    assert "0.00000001 @ 42000 fee 0" in text
    assert "E-8" not in text
    assert "E+4" not in text


def narrow_screen(state: LiveState, **kwargs) -> str:
    console = Console(record=True, width=80, file=io.StringIO())
    console.print(render(state, width=80, **kwargs))
    return console.export_text()


def test_at_80_columns_bot_names_and_figures_are_whole() -> None:
    state = LiveState()
    bot = "eth-btc-momentum"
    send(state, f"tranche.orders.rejected.{bot}", rejected(bot=bot))
    send(state, f"tranche.ledger.positions.{bot}", position().model_copy(update={"bot_id": bot}))
    text = narrow_screen(state)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text
    rows = [line for line in text.splitlines() if line.startswith("│") or line.startswith("┃")]
    assert any(bot in row for row in rows), text
    assert any("42000" in row and "-28.06" in row for row in rows), text


def test_every_time_shown_is_the_event_time() -> None:
    """Decisions used to show safety's wall-clock ``decided_at`` beside orders' market time."""
    state = LiveState()
    send(state, f"tranche.orders.rejected.{BOT}", rejected(n=5))  # decided 5 s after T0
    text = screen(state)
    assert "12:00:00" in text
    assert "12:00:05" not in text
    assert "event time, UTC" in text


def test_the_services_row_says_which_service_is_down_and_why() -> None:
    services = {"signal": "running", "executor": "restarting in 2 s (killed by SIGKILL)"}
    text = narrow_screen(LiveState(), services=services, notes=["12:00:01 executor stopped"])
    assert "executor restarting in 2 s (killed by SIGKILL)" in " ".join(text.split())
    assert "12:00:01 executor stopped" in text


def test_without_a_terminal_each_event_is_one_plain_line() -> None:
    state = LiveState()
    lines: list[str] = []
    printer = PlainLines(state, lines.append)
    for subject, message in (
        (f"tranche.orders.rejected.{BOT}", rejected()),
        (f"tranche.orders.approved.{BOT}", approved(2)),
        (f"tranche.orders.events.{BOT}", order_event(2, "filled")),
        (f"tranche.ledger.positions.{BOT}", position()),
        (f"tranche.market.ticker.{PRODUCT}", ticker("42000")),
    ):
        send(state, subject, message)
        printer()
    assert lines == [
        f"12:00:00 {BOT} REJECTED entry buy: COOLDOWN_ACTIVE: last entry 30 s ago, cooldown 300 s;"
        " DAILY_LIMIT_REACHED: 5 of 5 entries today",
        f"12:00:00 {BOT} approved entry buy -> order-2",
        f"12:00:00 {BOT} order order-2 filled",
        f"12:00:00 {BOT} position open 0.002 avg 42000 realized -28.0625",
    ]


async def test_positions_of_every_mode_and_states_are_read_over_http() -> None:
    """The operator may not list the positions bucket's keys: the view reads the ledger."""
    production = position(sequence=1, mode="production").model_copy(update={"bot_id": "live"})

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/positions":
            found = {"mock": [position()], "production": [production]}[request.url.params["mode"]]
            return httpx.Response(
                200, json=[{"position": p.model_dump(mode="json")} for p in found]
            )
        assert request.url.path == "/states"
        states = [{"scope": "*", "state": "active", "code": "", "message": "", "caused_by": ""}]
        return httpx.Response(200, json={"states": states})

    state = LiveState()
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        await read_positions(client, "http://ledger", state)
        await read_states(client, "http://safety", state)
    assert state.bots[BOT].position.quantity == D("0.002")
    assert state.bots["live"].position.mode == "production"
    assert state.system_state == "active"
    assert "system: active" in screen(state)


async def test_a_system_safety_never_stopped_shows_active_not_unknown() -> None:
    """Safety stores no row for the whole system until someone halts it: no row is active."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"mode": "mock", "states": []})

    state = LiveState()
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        await read_states(client, "http://safety", state)
    assert state.system_state == "active"
    assert "system: active" in screen(state)
