"""What an open page is sent: everything first, then only what changed."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from services.dashboard.board import Board
from services.dashboard.stream import Health, Pulse, chart_json, page_events
from tests.unit.test_live import BOT, PRODUCT, T0, rejected, send, ticker


async def next_events(events, count: int) -> list[tuple[str, str]]:
    return [(e["event"], e["data"]) for e in [await anext(events) for _ in range(count)]]


async def test_a_new_page_gets_every_part_then_only_what_changed() -> None:
    board, health, pulse = Board(), Health(), Pulse()
    events = page_events(board, health, pulse, "mock", every_s=0)

    first = await next_events(events, 5)
    assert [name for name, _ in first] == ["header", "bots", "feed", "health", "chart"]
    assert json.loads(first[-1][1]) == {"full": True, "points": {}, "marks": {}}

    waiting = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # nothing changed: nothing sent
    send(board, f"tranche.market.ticker.{PRODUCT}", ticker("42000"))
    pulse.beat()
    first_changed = await asyncio.wait_for(waiting, 2)
    rest = await next_events(events, 3)
    assert first_changed["event"] == "header"
    assert [name for name, _ in rest] == ["bots", "feed", "chart"]
    chart = json.loads(rest[-1][1])
    assert chart["full"] is False
    assert chart["points"] == {PRODUCT: [[int(T0.timestamp()), "42000"]]}
    await events.aclose()


async def test_a_health_change_sends_only_the_health_part_even_while_the_page_was_busy() -> None:
    board, health, pulse = Board(), Health(), Pulse()
    events = page_events(board, health, pulse, "mock", every_s=0)
    await next_events(events, 5)

    assert health.update("ledger", False, "unreachable")
    assert not health.update("ledger", False, "unreachable")  # the same again is no change
    pulse.beat()  # before the stream waits again: the beat must not be lost
    name, data = (await asyncio.wait_for(next_events(events, 1), 2))[0]
    assert name == "health"
    assert "ledger NOT READY" in data
    await events.aclose()


async def test_the_page_is_redrawn_once_for_a_burst_of_messages() -> None:
    board, health, pulse = Board(), Health(), Pulse()
    events = page_events(board, health, pulse, "mock", every_s=0.2)
    await next_events(events, 5)

    waiting = asyncio.ensure_future(next_events(events, 3))
    for n in range(1, 6):
        send(board, f"tranche.orders.rejected.{BOT}", rejected(n))
        pulse.beat()
        await asyncio.sleep(0.01)
    burst = await asyncio.wait_for(waiting, 2)
    assert [name for name, _ in burst] == ["header", "bots", "feed"]
    assert "messages 5" in burst[0][1]
    await events.aclose()


def test_chart_prices_travel_as_decimal_strings() -> None:
    board = Board()
    message = ticker("0.00000001").model_copy(update={"time": T0 + timedelta(seconds=1)})
    send(board, f"tranche.market.ticker.{PRODUCT}", message)

    sent = json.loads(chart_json(board.chart_since(0)))
    assert sent["points"][PRODUCT][0][1] == "0.00000001"
