"""Protective stops resting on the exchange (issue 22), through the four running services on the
mock exchange: the stop holds while the whole stack is down, and it follows the position through
a partial exit and an add, never two live stops and never one larger than the holding."""

from __future__ import annotations

import io
import itertools
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from tests.e2e.conftest import (
    get_json,
    position_of,
    publish,
    stack_config,
    started,
    ticker,
    wait_for,
)
from tests.e2e.test_safety_flow import tranche
from tranche import credentials
from tranche.stack import EmbeddedStack
from tranche.status import gather, render_stops

pytestmark = pytest.mark.e2e
SERVICES = ("signal", "safety", "executor", "ledger")


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """A stack of its own: the test kills every service of it."""
    config = stack_config(
        tmp_path_factory.mktemp("xstop"), SERVICES, extra_env={"TRANCHE_OUTBOX_POLL_S": "0.5"}
    )
    with started(config) as running:
        yield running


@pytest.fixture
def cli_trusts_own_stack(own_stack: EmbeddedStack, monkeypatch: pytest.MonkeyPatch) -> None:
    _, public_key = credentials.signing_keys(own_stack.config.data_dir.resolve())
    monkeypatch.setenv("TRANCHE_SIGNING_PUBLIC_KEY", public_key.read_text())


def inject(stack: EmbeddedStack, bot: str, side: str) -> None:
    body = f'{{"side":"{side}","temperature":80}}'.encode()
    publish(stack.config.nats_url_as("operator"), f"tranche.signals.inject.{bot}", body)


def orders(stack: EmbeddedStack, bot: str) -> list[dict]:
    found = get_json(stack.config.url("executor") + "/orders?limit=1000") or []
    return sorted((o for o in found if o["bot_id"] == bot), key=lambda o: o["created_at"])


def stops(stack: EmbeddedStack, bot: str) -> list[dict]:
    return [o for o in orders(stack, bot) if o["order_type"] == "stop"]


def live_stop(stack: EmbeddedStack, bot: str, size: Decimal | None = None):
    """The one live stop of the bot (of ``size``), once it rests on the exchange."""

    def probe() -> dict | None:
        live = [s for s in stops(stack, bot) if s["status"] == "open"]
        if len(live) == 1 and (size is None or Decimal(live[0]["base_size"]) == size):
            return live[0]
        return None

    return probe


def replaced(stack: EmbeddedStack, bot: str, stop: dict):
    """The bot's live stop once it is another than ``stop``."""

    def probe() -> dict | None:
        found = live_stop(stack, bot)()
        return found if found and found["client_order_id"] != stop["client_order_id"] else None

    return probe


def cancel_at_the_exchange(stack: EmbeddedStack, stop: dict) -> None:
    """The exchange cancels the stop on its own (an operator on the exchange's site, a
    maintenance): straight in the mock exchange's book."""
    path = Path(stack.config.data_dir) / "executor.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE mock_exchange_orders_v2 SET status = 'CANCELLED' WHERE client_order_id = ?",
            (stop["exchange_client_order_id"],),
        )


def buy_with_stop(stack: EmbeddedStack, bot: str) -> dict:
    """Open a position at 0.09 (five market minutes on) and return its stop once it rests."""
    ticker(stack.config.admin_url, "0.09", after=timedelta(minutes=5))
    inject(stack, bot, "buy")
    wait_for(position_of(stack, bot), what="the position")
    stop = wait_for(live_stop(stack, bot), what="the stop resting on the exchange")
    # The signal hears the stop rest through the executor's outbox and the order-events stream,
    # a moment after the exchange holds it: a price before that finds no live stop (it acts).
    wait_for(lambda: signal_heard(stack, bot) == "open", what="the signal hearing the stop rest")
    return stop


def signal_heard(stack: EmbeddedStack, bot: str) -> str | None:
    """The status of the bot's stop as the signal service last heard it (its own table)."""
    path = Path(stack.config.data_dir) / "signal.db"
    with sqlite3.connect(path) as db:
        row = db.execute(
            "SELECT status FROM signal_stop_states_v1 WHERE bot_id = ?", (bot,)
        ).fetchone()
    return row[0] if row else None


def book(stack: EmbeddedStack) -> list[tuple[str, str, str, str]]:
    """The mock exchange's book (its own table in the executor's database): one row per
    client_order_id by construction, so what counts is how many orders there are per bot."""
    path = Path(stack.config.data_dir) / "executor.db"
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT client_order_id, side, base_size, status FROM mock_exchange_orders_v2"
        ).fetchall()


def holding(stack: EmbeddedStack, bot: str) -> Decimal:
    found = get_json(f"{stack.config.url('ledger')}/positions/{bot}")
    return Decimal(found["position"]["quantity"]) if found else Decimal(0)


def test_a_stop_on_the_exchange_acts_while_the_whole_stack_is_down(
    own_stack: EmbeddedStack,
) -> None:
    stack, bot, url = own_stack, "xstop-down", own_stack.config.admin_url
    ticker(url, "0.09")
    inject(stack, bot, "buy")
    position = wait_for(position_of(stack, bot), what="the position")
    quantity = Decimal(position["quantity"])
    stop = wait_for(live_stop(stack, bot), what="the stop resting on the exchange")
    assert Decimal(stop["base_size"]) == quantity  # the whole holding (on the increment)
    even = Decimal(position["break_even_price"])
    stop_price = (even * Decimal("0.98")).quantize(Decimal("0.00000001"), rounding="ROUND_DOWN")

    for name in SERVICES:
        stack.stop_service(name, kill=True)
    # The market falls through the stop while nothing of Tranche runs (kept by TRANCHE_MARKET).
    ticker(url, str(stop_price + Decimal("0.0005")), after=timedelta(minutes=1))
    through = str(stop_price - Decimal("0.00002"))
    fell_at = ticker(url, through, after=timedelta(minutes=1))
    for name in SERVICES:
        stack.start_service(name, move_if_taken=True)
    for name in SERVICES:
        stack.wait_ready(name)

    def flat() -> dict | None:
        found = get_json(f"{stack.config.url('ledger')}/positions/{bot}")
        return found if found and found["position"]["status"] == "flat" else None

    wait_for(flat, timeout=90, what="the position booked flat at the stop's fill")
    fills = get_json(f"{stack.config.url('ledger')}/fills?bot_id={bot}")
    sells = [f for f in fills if f["side"] == "sell"]
    assert len(sells) == 1, sells
    assert Decimal(sells[0]["price"]) == Decimal(through)
    assert datetime.fromisoformat(sells[0]["time"]) == fell_at  # the tick's event time
    # Nothing placed twice: one buy and one stop at the exchange, each once.
    mine = list(orders(stack, bot))
    assert [(o["side"], o["order_type"], o["status"]) for o in mine] == [
        ("buy", "market", "filled"),
        ("sell", "stop", "filled"),
    ]
    exchange_ids = {o["exchange_client_order_id"] for o in mine}
    assert len([row for row in book(stack) if row[0] in exchange_ids]) == 2
    # Booked as the exit it is, with its own reason, and shown so in the history.
    assert [(f["side"], f["intent_reason"]) for f in fills] == [
        ("buy", "SIGNAL"),
        ("sell", "STOP_ON_EXCHANGE"),
    ]
    (closed,) = get_json(f"{stack.config.url('ledger')}/positions/{bot}/history")["positions"]
    assert [e["reason"] for e in closed["exits"]] == ["STOP_ON_EXCHANGE"]
    assert closed["exit_reason"] == "STOP_ON_EXCHANGE"


def test_the_stop_follows_the_holding_through_a_partial_exit_and_an_add(
    own_stack: EmbeddedStack,
) -> None:
    stack, bot, url = own_stack, "xstop-trip", own_stack.config.admin_url
    ticker(url, "0.09", after=timedelta(minutes=5))
    inject(stack, bot, "buy")
    wait_for(position_of(stack, bot), what="the position")
    sizes = [
        Decimal(wait_for(live_stop(stack, bot, holding(stack, bot)), what="stop 1")["base_size"])
    ]

    ticker(url, "0.091", after=timedelta(minutes=5))
    inject(stack, bot, "sell")  # exit_fraction 0.5: half the position
    wait_for(lambda: holding(stack, bot) < sizes[0] or None, what="the partial exit")
    sizes.append(
        Decimal(wait_for(live_stop(stack, bot, holding(stack, bot)), what="stop 2")["base_size"])
    )

    ticker(url, "0.092", after=timedelta(minutes=5))
    inject(stack, bot, "buy")  # an add
    wait_for(lambda: holding(stack, bot) > sizes[1] or None, what="the add")
    sizes.append(
        Decimal(wait_for(live_stop(stack, bot, holding(stack, bot)), what="stop 3")["base_size"])
    )

    assert sizes[1] < sizes[0] and sizes[2] > sizes[1], sizes
    history = stops(stack, bot)
    assert [Decimal(s["base_size"]) for s in history] == sizes
    assert [s["status"] for s in history] == ["cancelled", "cancelled", "open"]
    # Never two live: each stop's cancel was confirmed before the next one went out, and the
    # partial exit was sold only once the first stop was cancelled.
    for before, after in itertools.pairwise(history):
        assert before["updated_at"] <= after["placed_at"], (before, after)
    (partial,) = [
        o for o in orders(stack, bot) if o["side"] == "sell" and o["order_type"] == "market"
    ]
    assert history[0]["updated_at"] <= partial["placed_at"]
    assert history[1]["placed_at"] >= partial["updated_at"]
    assert history[0]["cancel_code"] == "STOP_BEFORE_SELL"


@pytest.mark.usefixtures("cli_trusts_own_stack")
def test_a_halt_keeps_the_stop_and_a_halt_that_says_so_cancels_it(
    own_stack: EmbeddedStack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack, bot, url = own_stack, "xstop-halt", own_stack.config.admin_url
    stop = buy_with_stop(stack, bot)
    code, out = tranche(capsys, "halt", bot, "--nats-url", url)
    assert code == 0 and "protective stops on the exchange stay" in out, out
    time.sleep(3)  # the executor has heard the halt by now (it cancels every other order)
    kept = live_stop(stack, bot)()
    assert kept is not None and kept["client_order_id"] == stop["client_order_id"]
    code, out = tranche(capsys, "halt", bot, "--cancel-stops", "--nats-url", url)
    assert code == 0 and out.startswith("HALT_CANCEL_STOPS:"), out

    def cancelled() -> dict | None:
        (only,) = stops(stack, bot)
        return only if only["status"] == "cancelled" else None

    assert wait_for(cancelled, what="the stop cancelled")["cancel_code"] == "HALT"
    assert holding(stack, bot) > 0  # cancelling the stop sells nothing
    shown = wait_for(shown_as(stack, bot, "none"), what="status: no stop, and why")
    assert shown["code"] == "STOP_ENDED" and "halt cancelled it" in shown["reason"], shown
    code, _ = tranche(capsys, "resume", bot, "--nats-url", url)
    assert code == 0


@pytest.mark.usefixtures("cli_trusts_own_stack")
def test_a_flatten_cancels_the_stop_and_ends_flat_with_no_stop_left(
    own_stack: EmbeddedStack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack, bot, url = own_stack, "xstop-flat", own_stack.config.admin_url
    buy_with_stop(stack, bot)
    ticker(url, "0.09", after=timedelta(minutes=1))
    code, out = tranche(capsys, "flatten", bot, "--wait", "60", "--nats-url", url)
    assert code == 0, out
    wait_for(lambda: holding(stack, bot) == 0 or None, what="flat")
    (closed,) = get_json(f"{stack.config.url('ledger')}/positions/{bot}/history")["positions"]
    assert closed["exit_reason"] == "FLATTEN"
    mine = orders(stack, bot)
    assert [(o["order_type"], o["status"]) for o in mine] == [
        ("market", "filled"),
        ("stop", "cancelled"),
        ("market", "filled"),
    ]
    assert mine[1]["cancel_code"] == "STOP_BEFORE_SELL"
    code, _ = tranche(capsys, "resume", bot, "--nats-url", url)
    assert code == 0


def test_a_stop_cancelled_from_outside_is_asked_again(own_stack: EmbeddedStack) -> None:
    stack, bot = own_stack, "xstop-outside"
    first = buy_with_stop(stack, bot)
    # The exchange cancels it on its own (an operator on the exchange's site, a maintenance).
    cancel_at_the_exchange(stack, first)

    second = wait_for(
        replaced(stack, bot, first), timeout=90, what="a new stop after the outside cancel"
    )
    assert second["base_size"] == first["base_size"] and holding(stack, bot) > 0
    assert [s["status"] for s in stops(stack, bot)] == ["cancelled", "open"]


def stop_status(stack: EmbeddedStack, bot: str) -> dict | None:
    """The bot's stop as ``tranche status --json`` shows it (``None``: not shown)."""
    urls = {name: stack.config.url(name) for name in SERVICES}
    return gather(urls, decisions=1)["stops"]["bots"].get(bot)


def shown_as(stack: EmbeddedStack, bot: str, state: str):
    """The bot's stop in ``tranche status`` once it is in ``state``."""

    def probe() -> dict | None:
        shown = stop_status(stack, bot)
        return shown if shown and shown["state"] == state else None

    return probe


def test_after_a_restart_status_shows_the_one_live_stop_at_the_size_of_the_holding(
    own_stack: EmbeddedStack,
) -> None:
    stack, bot = own_stack, "xstop-restart"
    stop = buy_with_stop(stack, bot)
    for name in SERVICES:
        stack.stop_service(name, kill=True)
    for name in SERVICES:
        stack.start_service(name, move_if_taken=True)
    for name in SERVICES:
        stack.wait_ready(name)

    def judged_live() -> dict | None:
        shown = stop_status(stack, bot)
        return shown if shown and shown["code"] == "STOP_LIVE" else None

    shown = wait_for(judged_live, timeout=60, what="status showing the live stop")
    held = holding(stack, bot)
    assert (shown["state"], shown["client_order_id"]) == ("live", stop["client_order_id"])
    assert Decimal(shown["size"]) == held == Decimal(shown["holding"]) and shown["size_matches"]
    assert shown["live_count"] == 1

    # With a price again the signal service asks the same stop (same intent): nothing placed twice.
    def asked_again() -> dict | None:
        ticker(stack.config.admin_url, "0.09", after=timedelta(minutes=1))
        return next((a for a in stops_asked(stack) if a["bot_id"] == bot and a["intent_id"]), None)

    asked = wait_for(asked_again, what="the signal service's judgement after the restart")
    assert asked["intent_id"] == stop["intent_id"], (asked, stop)
    assert judged_live() is not None
    assert [s["client_order_id"] for s in stops(stack, bot)] == [stop["client_order_id"]]
    console = Console(width=200, file=io.StringIO(), color_system=None)
    render_stops(gather({n: stack.config.url(n) for n in SERVICES})["stops"], console)
    assert f"{held} / {held}" in console.file.getvalue()


def stops_asked(stack: EmbeddedStack) -> list[dict]:
    return get_json(stack.config.url("signal") + "/stops") or []


def test_a_stop_the_exchange_keeps_cancelling_shows_why_the_position_has_none(
    own_stack: EmbeddedStack,
) -> None:
    stack, bot = own_stack, "xstop-refused"
    live = buy_with_stop(stack, bot)
    for attempt in range(3):  # cancelled on the exchange each time: asked again twice
        cancel_at_the_exchange(stack, live)
        if attempt < 2:
            live = wait_for(replaced(stack, bot, live), timeout=90, what=f"stop {attempt + 2}")

    shown = wait_for(shown_as(stack, bot, "none"), what="status showing why there is no stop")
    assert shown["code"] == "STOP_ENDED" and holding(stack, bot) > 0
    assert "cancelled" in shown["reason"] and "3 time(s)" in shown["reason"], shown
    assert "stop-loss protects it" in shown["reason"]
    assert [s["status"] for s in stops(stack, bot)] == ["cancelled"] * 3


# -- the signal's own stop-loss stands down while the exchange holds the stop ---------------------


def signal_exits(stack: EmbeddedStack, bot: str) -> list[tuple[str, str | None]]:
    """Every exit the signal service decided for the bot other than its stops (its own records:
    written as it handles the tick, so before any order of it exists)."""
    path = Path(stack.config.data_dir) / "signal.db"
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT outcome_code, intent_id FROM signal_records WHERE bot_id = ? AND side = 'sell'"
            " AND outcome_code != 'STOP_ON_EXCHANGE'",
            (bot,),
        ).fetchall()


def held_at_the_exchange(stack: EmbeddedStack, bot: str) -> Decimal:
    """What the mock exchange filled for the bot, bought minus sold."""
    ids = {o["exchange_client_order_id"] for o in orders(stack, bot)}
    path = Path(stack.config.data_dir) / "executor.db"
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT client_order_id, side, filled_size FROM mock_exchange_orders_v2"
        ).fetchall()
    return sum(
        (Decimal(size) * (1 if side == "buy" else -1) for cid, side, size in rows if cid in ids),
        Decimal(0),
    )


def flat_ledger(stack: EmbeddedStack, bot: str):
    def probe() -> dict | None:
        found = get_json(f"{stack.config.url('ledger')}/positions/{bot}")
        return found if found and found["position"]["status"] == "flat" else None

    return probe


def fall_to_flat(
    stack: EmbeddedStack, bot: str, to: Callable[[Decimal, Decimal], Decimal]
) -> tuple[dict, dict]:
    """Buy with a stop, let the price fall to ``to(stop price, limit price)`` and wait until the
    position is booked flat: the position bought and the position closed."""
    stop = buy_with_stop(stack, bot)
    position = wait_for(position_of(stack, bot), what="the position")
    even = Decimal(position["break_even_price"])
    stop_price = (even * Decimal("0.98")).quantize(Decimal("0.00000001"), rounding="ROUND_DOWN")
    price = to(stop_price, Decimal(stop["limit_price"])).quantize(Decimal("0.00000001"))
    ticker(stack.config.admin_url, str(price), after=timedelta(minutes=1))
    wait_for(flat_ledger(stack, bot), timeout=90, what="the position booked flat")
    (closed,) = get_json(f"{stack.config.url('ledger')}/positions/{bot}/history")["positions"]
    return position, closed


def test_through_the_stop_above_its_limit_the_exchange_sells_and_the_signal_stands_down(
    own_stack: EmbeddedStack,
) -> None:
    stack, bot = own_stack, "xstop-hold"
    # Between the stop and its limit: past the signal's stop-loss too.
    _, closed = fall_to_flat(stack, bot, lambda stop, limit: (stop + limit) / 2)
    assert closed["exit_reason"] == "STOP_ON_EXCHANGE"
    assert signal_exits(stack, bot) == []  # the signal's stop-loss asked nothing
    mine = orders(stack, bot)
    assert [(o["side"], o["order_type"], o["status"]) for o in mine] == [
        ("buy", "market", "filled"),
        ("sell", "stop", "filled"),
    ]
    assert held_at_the_exchange(stack, bot) == 0 == holding(stack, bot)


def test_a_gap_through_the_stops_limit_is_sold_by_the_signal_once_the_stop_is_cancelled(
    own_stack: EmbeddedStack,
) -> None:
    stack, bot = own_stack, "xstop-gap"
    # Below the limit at once: the stop triggers and rests unfilled, the signal's exit sells.
    position, closed = fall_to_flat(stack, bot, lambda _, limit: limit * Decimal("0.99"))
    assert closed["exit_reason"] == "STOP_LOSS"
    assert [code for code, _ in signal_exits(stack, bot)] == ["STOP_LOSS"]
    mine = orders(stack, bot)
    assert [(o["side"], o["order_type"], o["status"], o["intent_reason"]) for o in mine] == [
        ("buy", "market", "filled", "SIGNAL"),
        ("sell", "stop", "cancelled", "STOP_ON_EXCHANGE"),
        ("sell", "market", "filled", "STOP_LOSS"),
    ]
    assert mine[1]["cancel_code"] == "STOP_BEFORE_SELL" and Decimal(mine[1]["filled_size"]) == 0
    assert Decimal(mine[2]["filled_size"]) == Decimal(position["quantity"])  # sold once, all
    assert held_at_the_exchange(stack, bot) == 0 == holding(stack, bot)


def test_a_stop_that_ended_while_the_signal_was_down_is_asked_again_after_it(
    own_stack: EmbeddedStack,
) -> None:
    """The signal service keeps its stop state and hears the order events it missed: a stop
    cancelled from outside while it was down is asked again under the next attempt's id once it
    is back (it used to ask the first stop's id again, already handled, and never hear the
    cancel: the position waited for a stop forever, shown pending)."""
    stack, bot = own_stack, "xstop-again"
    first = buy_with_stop(stack, bot)
    cancel_at_the_exchange(stack, first)  # heard: asked again at once
    second = wait_for(replaced(stack, bot, first), timeout=90, what="the second stop")
    stack.stop_service("signal", kill=True)
    cancel_at_the_exchange(stack, second)  # while the signal service is down

    def seen_cancelled() -> bool:
        return [s["status"] for s in stops(stack, bot)] == ["cancelled", "cancelled"]

    wait_for(seen_cancelled, timeout=90, what="the executor seeing the outside cancel")
    stack.start_service("signal", move_if_taken=True)
    stack.wait_ready("signal")

    def third_stop() -> dict | None:
        ticker(stack.config.admin_url, "0.09", after=timedelta(minutes=1))
        return replaced(stack, bot, second)()

    third = wait_for(third_stop, timeout=90, what="a stop after the restart")
    held = holding(stack, bot)
    assert Decimal(third["base_size"]) == held > 0
    assert [s["status"] for s in stops(stack, bot)] == ["cancelled", "cancelled", "open"]
    assert third["intent_id"].endswith(":2"), third

    def shown_live() -> dict | None:
        shown = stop_status(stack, bot)
        return shown if shown and shown["code"] == "STOP_LIVE" else None

    shown = wait_for(shown_live, what="status showing the one live stop")
    assert (shown["client_order_id"], shown["live_count"]) == (third["client_order_id"], 1)
    assert Decimal(shown["size"]) == held and shown["size_matches"]
