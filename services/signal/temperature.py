"""Temperature bands (DESIGN.md): how strong a signal is decides whether and how big it trades.

The bands are per bot (``frozen_below``, ``cool_below``, ``warm_below`` in its config); the
module-level functions use the defaults, 25 / 50 / 75.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from shared.catalog import Bot
from shared.contracts import Band

FROZEN_BELOW = Decimal(25)
COOL_BELOW = Decimal(50)
WARM_BELOW = Decimal(75)


@dataclass(frozen=True)
class Bands:
    frozen_below: Decimal = FROZEN_BELOW
    cool_below: Decimal = COOL_BELOW
    warm_below: Decimal = WARM_BELOW

    def band_of(self, temperature: Decimal) -> Band:
        if temperature < self.frozen_below:
            return "frozen"
        if temperature < self.cool_below:
            return "cool"
        if temperature < self.warm_below:
            return "warm"
        return "hot"


DEFAULT_BANDS = Bands()


def bands_of(bot: Bot) -> Bands:
    return Bands(bot.frozen_below, bot.cool_below, bot.warm_below)


def band_of(temperature: Decimal) -> Band:
    """The band with the default bounds."""
    return DEFAULT_BANDS.band_of(temperature)


def size_factor(band: Band) -> Decimal:
    """Share of a bot's full entry size that a band allows (0 = no entry)."""
    return {"frozen": Decimal(0), "cool": Decimal(0), "warm": Decimal("0.5"), "hot": Decimal(1)}[
        band
    ]


def allows_exit(band: Band) -> bool:
    """Signal-driven exits need at least a cool signal; frozen is noise."""
    return band != "frozen"
