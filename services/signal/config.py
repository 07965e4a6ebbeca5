from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class SignalSettings(ServiceSettings):
    service: str = "signal"
    replay: str = ""
    """Feeds to replay, ``PRODUCT=file.csv`` separated by commas; empty = no replay."""
    replay_speed: float = Field(default=120.0, ge=0)
    """Event seconds per wall second; 0 = as fast as possible."""
