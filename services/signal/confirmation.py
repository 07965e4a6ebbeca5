"""Signal confirmation (pure state machine): a direction becomes an intent only after it holds
for N consecutive evaluations *and* T seconds of event time.

* ``hold`` resets; a flip to the other direction starts a new count at 1;
* a drop to a lower temperature band starts a new count at 1 in the lower band (a rise keeps
  counting: stronger evidence does not make the trader wait again);
* after firing it counts again from zero, so a direction that persists asks again only after
  another N evaluations and T seconds (and with N = 1, T = 0 every evaluation acts: no
  confirmation). Whether that second ask trades is safety's call (cooldown, entry step, cap).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.contracts import Band

BAND_ORDER: dict[str, int] = {"frozen": 0, "cool": 1, "warm": 2, "hot": 3}


@dataclass(frozen=True)
class Progress:
    direction: str
    band: Band
    count: int
    needed: int
    since: datetime | None
    fires: bool
    """True on the evaluation that confirms the run (which then counts again from zero)."""

    def held_for(self, now: datetime) -> timedelta:
        return now - self.since if self.since else timedelta(0)


class Confirmation:
    def __init__(self, needed: int, hold: timedelta):
        if needed < 1 or hold < timedelta(0):
            raise ValueError("confirmation needs at least 1 evaluation and a hold of 0 s or more")
        self.needed, self.hold = needed, hold
        self._direction = "hold"
        self._band: Band = "frozen"
        self._count = 0
        self._since: datetime | None = None

    def feed(self, direction: str, band: Band, time: datetime) -> Progress:
        if direction == "hold":
            self._reset("hold", band, None, 0)
        elif direction != self._direction or BAND_ORDER[band] < BAND_ORDER[self._band]:
            self._reset(direction, band, time, 1)
        else:
            self._count += 1
            self._band = band
        fires = (
            self._direction != "hold"
            and self._count >= self.needed
            and self._since is not None
            and time - self._since >= self.hold
        )
        progress = Progress(
            self._direction, self._band, self._count, self.needed, self._since, fires
        )
        if fires:
            self._count, self._since = 0, time
        return progress

    def _reset(self, direction: str, band: Band, since: datetime | None, count: int) -> None:
        self._direction, self._band, self._since, self._count = direction, band, since, count
