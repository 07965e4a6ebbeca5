from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class SignalSettings(ServiceSettings):
    service: str = "signal"
    replay: str = ""
    """Feeds to replay, ``PRODUCT=file.csv`` separated by commas; empty = no replay."""
    replay_speed: float = Field(default=120.0, ge=0)
    """Event seconds per wall second; 0 = as fast as possible."""
    replay_lockstep: bool = False
    """Lock step: after each replayed tick wait until every intent so far has settled (decided;
    approved ones final, booked and seen by safety), so a replay decides the same way every time
    (``tranche replay`` sets it)."""
    replay_settle_timeout_s: float = Field(default=30.0, gt=0)
    """Lock step: an intent not settled within this many seconds stops the replay with its id."""
    random_walk: str = ""
    """Products to simulate, ``PRODUCT=start_price`` separated by commas (a seeded random walk,
    one tick per second of wall time)."""
    random_walk_seed: int = 1
    stale_after_s: float = Field(default=120.0, gt=0)
    """A product without a tick for this long (wall clock) is stale: announced, no new entries."""
