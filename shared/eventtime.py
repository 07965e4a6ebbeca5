"""Event times that cannot wedge anything (DESIGN promise 6).

Every service keeps the newest market time it has accepted per product and never lets an older
tick replace it. So one tick dated far in the future would become "now" for good: real ticks
would be ignored as older, the feed would go stale and cooldowns would never lift. A time more
than a bounded skew ahead of the newest accepted one for its product, or of the wall clock, is
therefore refused (to the dead-letter subject, with the reason), never adopted.

The wall clock bounds every mode: recorded market data lies in the past, and a random walk runs
at wall-clock pace. In production the bound is tight (minutes of clock skew); in mock mode it
is days, so tests may play tomorrow's prices. The contract type :data:`shared.money.UtcTime`
also refuses years outside 1970-2999, so no arithmetic with a bounded duration can overflow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.contracts import Reason


@dataclass(frozen=True)
class TimeBounds:
    ahead_of_newest: timedelta = timedelta(days=1)
    """How far an event time may lead the newest accepted one of its product (a data gap)."""
    ahead_of_clock: timedelta = timedelta(minutes=5)
    """How far an event time may lead the wall clock (clock skew between hosts)."""


PRODUCTION_BOUNDS = TimeBounds()
MOCK_BOUNDS = TimeBounds(ahead_of_clock=timedelta(days=7))


def bounds_for(mode: str) -> TimeBounds:
    return PRODUCTION_BOUNDS if mode == "production" else MOCK_BOUNDS


def refuse_time(
    time: datetime,
    newest: datetime | None,
    now: datetime | None,
    bounds: TimeBounds,
    what: str = "event time",
) -> Reason | None:
    """Why ``time`` may not be accepted, or None. ``newest``: the newest time accepted so far
    for the same product (None: none yet); ``now``: the wall clock (None: not checked). Only
    differences of two times are computed, so no input overflows."""
    if now is not None and time - now > bounds.ahead_of_clock:
        return Reason(
            code="EVENT_TIME_AHEAD",
            message=f"{what} {time.isoformat()} is more than {bounds.ahead_of_clock} ahead of "
            f"the clock ({now.isoformat()})",
        )
    if newest is not None and time - newest > bounds.ahead_of_newest:
        return Reason(
            code="EVENT_TIME_JUMP",
            message=f"{what} {time.isoformat()} is more than {bounds.ahead_of_newest} ahead of "
            f"the newest accepted one ({newest.isoformat()})",
        )
    return None


class NewestTimes:
    """The newest accepted event time per product, refusing times too far ahead of it (or of
    ``clock``, if given) with :class:`shared.bus.InvalidMessage`, which dead-letters them."""

    def __init__(self, bounds: TimeBounds, clock: Callable[[], datetime] | None):
        self.bounds = bounds
        self.clock = clock
        self._newest: dict[str, datetime] = {}

    def newest(self, product_id: str) -> datetime | None:
        return self._newest.get(product_id)

    def admit(self, product_id: str, time: datetime, what: str) -> None:
        """Accept ``time`` for ``product_id`` (an older one is accepted but is not newest)."""
        from shared.bus import InvalidMessage  # bus imports the contracts; keep this module light

        now = self.clock() if self.clock is not None else None
        reason = refuse_time(time, self._newest.get(product_id), now, self.bounds, what)
        if reason is not None:
            raise InvalidMessage(reason)
        if product_id not in self._newest or time > self._newest[product_id]:
            self._newest[product_id] = time


def check_times(times: list[datetime], now: datetime, bounds: TimeBounds, what: str) -> None:
    """Refuse (InvalidMessage) the first of ``times`` too far ahead of the clock: for the times
    of an order event and its fills, which have no product-wide order to compare with."""
    from shared.bus import InvalidMessage

    for time in times:
        reason = refuse_time(time, None, now, bounds, what)
        if reason is not None:
            raise InvalidMessage(reason)
