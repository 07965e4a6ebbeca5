"""Temperature bands (DESIGN.md): how strong a signal is decides whether and how big it trades."""

from __future__ import annotations

from decimal import Decimal

from shared.contracts import Band

FROZEN_BELOW = Decimal(25)
COOL_BELOW = Decimal(50)
WARM_BELOW = Decimal(75)


def band_of(temperature: Decimal) -> Band:
    if temperature < FROZEN_BELOW:
        return "frozen"
    if temperature < COOL_BELOW:
        return "cool"
    if temperature < WARM_BELOW:
        return "warm"
    return "hot"


def size_factor(band: Band) -> Decimal:
    """Share of a bot's full entry size that a band allows (0 = no entry)."""
    return {"frozen": Decimal(0), "cool": Decimal(0), "warm": Decimal("0.5"), "hot": Decimal(1)}[
        band
    ]


def allows_exit(band: Band) -> bool:
    """Signal-driven exits need at least a cool signal; frozen is noise."""
    return band != "frozen"
