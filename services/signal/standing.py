"""Standing exits (pure): a protective exit or a flatten is asked again at every evaluation while
its trigger holds and the bot holds a position, backing off in event time, until the position
is flat or the trigger clears (DESIGN.md promise 11).

Every attempt has its own signal id made from the data (bot, position, the position's sequence,
the tick's time), so a replay asks the same attempts and a redelivered tick asks nothing new.
Safety judges each attempt; a rejected one (an order in flight, a position the ledger has not
caught up with) is simply asked again after the back-off. No clock inside: ``now`` is the time
of the tick being evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.contracts import PositionUpdate, Reason
from shared.exits import FLATTEN

BACKOFF = (
    timedelta(0),
    timedelta(seconds=5),
    timedelta(seconds=10),
    timedelta(seconds=20),
    timedelta(seconds=40),
    timedelta(seconds=60),
)
"""Event time between attempt ``n`` and ``n + 1`` for one trigger on one state of the
position; the last value repeats. A new state of the position (a fill) starts again at 0."""


def backoff_after(attempts: int) -> timedelta:
    return BACKOFF[min(attempts, len(BACKOFF) - 1)]


def flatten_reason(requested: str) -> Reason:
    return Reason(code=FLATTEN, message=f"flatten requested: {requested}"[:500])


def holds(position: PositionUpdate | None) -> bool:
    return (
        position is not None
        and position.status == "open"
        and position.position_id is not None
        and position.quantity > 0
    )


@dataclass
class _Attempts:
    key: str
    last: datetime
    count: int


@dataclass
class StandingExits:
    """Per bot: when the current trigger was last asked for, and how often."""

    _asked: dict[str, _Attempts] = field(default_factory=dict)

    def ask(
        self,
        bot_id: str,
        position: PositionUpdate | None,
        trigger: Reason | None,
        now: datetime,
    ) -> str | None:
        """The signal id of the exit to ask for now, or ``None`` (no trigger, nothing held, or
        still backing off). Asking records the attempt."""
        if trigger is None or not holds(position):
            self._asked.pop(bot_id, None)
            return None
        assert position is not None
        key = f"{trigger.code}:{position.position_id}:{position.sequence}"
        seen = self._asked.get(bot_id)
        if seen is not None and seen.key == key:
            if now < seen.last + backoff_after(seen.count):
                return None
            seen.last, seen.count = now, seen.count + 1
        else:
            self._asked[bot_id] = _Attempts(key, now, 1)
        kind = "flatten" if trigger.code == FLATTEN else "protect"
        return f"{kind}:{bot_id}:{position.position_id}:{position.sequence}:{now:%Y%m%dT%H%M%S%f}"

    def forget(self, bot_id: str) -> None:
        self._asked.pop(bot_id, None)

    def forget_all(self) -> None:
        """The whole system was resumed: every back-off starts again."""
        self._asked.clear()
