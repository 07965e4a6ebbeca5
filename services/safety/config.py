from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class SafetySettings(ServiceSettings):
    service: str = "safety"
    entry_cooldown_s: float = Field(default=300, ge=0)
    """Minimum event time between two entries (or adds) of a bot."""
    exit_cooldown_s: float = Field(default=60, ge=0)
    """Minimum event time after an exit before the bot's next trade."""
