"""What one open page is sent: server-sent events, named after the part of the page they fill.

``header``, ``bots``, ``feed`` and ``health`` are HTML fragments (see :mod:`views`), sent when
what they show changed; ``chart`` is JSON with only the price points and trade marks the page
has not had yet. Nothing here reads a service: the stream follows the board and the health
map, which the app keeps current.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from services.dashboard import views
from services.dashboard.board import Board, ChartNews
from shared.money import format_decimal


class Pulse:
    """Wakes every waiting stream when the board or the health map changed.

    ``beats`` counts the changes, so a stream that was busy sending when one happened still
    sees it: :meth:`wait` returns at once when a beat came after the count it was given.
    """

    def __init__(self) -> None:
        self.beats = 0
        self._beat: asyncio.Future[None] | None = None

    def beat(self) -> None:
        self.beats += 1
        if self._beat is not None and not self._beat.done():
            self._beat.set_result(None)
        self._beat = None

    async def wait(self, seen: int, timeout: float) -> None:
        """Until a beat after ``seen`` beats, or ``timeout`` seconds."""
        if self.beats != seen:
            return
        if self._beat is None:
            self._beat = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._beat), timeout)


@dataclass
class Health:
    """Each watched service's readiness; ``version`` grows when any of it changed."""

    services: views.HealthMap = field(default_factory=dict)
    version: int = 0

    def update(self, name: str, ready: bool, detail: str) -> bool:
        if self.services.get(name) == (ready, detail):
            return False
        self.services[name] = (ready, detail)
        self.version += 1
        return True


def chart_json(news: ChartNews, full: bool = False) -> str:
    """Prices as decimal strings (the page turns them into chart coordinates only); ``full``
    tells the page to start its charts over (the first message of a stream, also after a
    reconnect)."""
    points, marks = news
    return json.dumps(
        {
            "full": full,
            "points": {
                product: [[p.time, format_decimal(p.price)] for p in line]
                for product, line in points.items()
            },
            "marks": {
                product: [
                    {
                        "time": m.time,
                        "price": format_decimal(m.price),
                        "size": format_decimal(m.size),
                        "side": m.side,
                        "action": m.action,
                        "bot": m.bot_id,
                    }
                    for m in found
                ]
                for product, found in marks.items()
            },
        },
        separators=(",", ":"),
    )


async def page_events(
    board: Board,
    health: Health,
    pulse: Pulse,
    configured_mode: str,
    every_s: float,
) -> AsyncIterator[dict[str, str]]:
    """Everything first, then what changed, at most once every ``every_s`` seconds."""
    board_seen = health_seen = -1
    chart_seen = 0
    first = True
    while True:
        beats = pulse.beats
        if board.version != board_seen:
            board_seen = board.version
            yield {"event": "header", "data": views.header(board, configured_mode)}
            yield {"event": "bots", "data": views.bots(board)}
            yield {"event": "feed", "data": views.feed(board)}
        if health.version != health_seen:
            health_seen = health.version
            yield {"event": "health", "data": views.health(health.services)}
        if first or board.chart_seq != chart_seen:
            news = board.chart_since(chart_seen)
            chart_seen = board.chart_seq
            yield {"event": "chart", "data": chart_json(news, full=first)}
        first = False
        await pulse.wait(beats, timeout=15)
        await asyncio.sleep(every_s)  # a burst of messages becomes one redraw
