"""Products (the exchange's size rules) and bots, read from one TOML file.

This is reference data every service reads the same way; the rules that use it live in the
services. A bad file stops the service with the bot or product and the field at fault.
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, ValidationError, model_validator

from shared.contracts import Contract, Token
from shared.money import Dec, PositiveDec

_BESIDE_PACKAGE = Path(__file__).resolve().parent.parent / "config" / "tranche.toml"
# A checkout (editable install) has config/ beside the package; an installed wheel does not, so
# then it is looked up in the working directory (the image's /app).
DEFAULT_FILE = (
    _BESIDE_PACKAGE if _BESIDE_PACKAGE.exists() else Path.cwd() / "config" / "tranche.toml"
)


class Product(Contract):
    base_min_size: PositiveDec
    base_increment: PositiveDec
    quote_increment: PositiveDec
    quote_min_size: PositiveDec


ParamName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
ParamText = Annotated[str, StringConstraints(max_length=256)]
MAX_SIGNALS = 32
"""Signals per bot: more than any blend needs, and a bot record stays far below NATS's max
payload (a record over it could not be stored)."""


class SignalSpec(Contract):
    """One of a bot's signals: a registered name, its weight in the blend, its parameters."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    weight: PositiveDec = Decimal(1)
    params: dict[ParamName, int | ParamText | bool] = Field(default_factory=dict, max_length=32)
    """Numbers that are not whole are written as strings (``full_pct = "0.5"``): no floats."""


class Bot(Contract):
    product_id: Token
    quote_size: PositiveDec
    """Quote currency spent by one full-size entry (a warm signal spends half)."""
    signals: list[SignalSpec] = Field(default_factory=list, max_length=MAX_SIGNALS)
    """What the bot evaluates on every closed candle; none: it trades only injected signals."""
    candle_s: int = Field(default=60, ge=60, le=86_400)
    """Candle interval, 1 minute to 1 day."""
    buy_threshold: Dec = Decimal("0.3")
    sell_threshold: Dec = Decimal("0.3")
    """The blended score (-1..1) at which a candle says buy (>= buy) or sell (<= -sell)."""
    confirm_evaluations: int = Field(default=3, ge=1, le=1000)
    confirm_seconds: int = Field(default=120, ge=0, le=7 * 86_400)
    """A direction becomes an intent after this many evaluations *and* seconds of event time."""
    exit_fraction: Dec = Decimal(1)
    """Share of the position a signal-driven exit sells (1 = all of it)."""
    stop_loss_pct: Dec | None = None
    take_profit_pct: Dec | None = None
    trailing_stop_pct: Dec | None = None
    """Protective exits, in percent from the break-even price (trailing: from the highest price
    since entry); they act on every tick, whatever the temperature and confirmation."""
    stop_on_exchange: bool = False
    """Keep a protective stop-limit sell resting on the exchange for the whole position, at
    ``stop_loss_pct`` below break-even (shared/stops.py; docs/safety.md): it acts while Tranche
    is down. Needs ``stop_loss_pct``."""
    stop_limit_offset_pct: Dec = Decimal("0.5")
    """How far below the stop price the stop's limit price is, in percent: the room a falling
    market has to fill the stop before it gaps through the limit and rests unfilled."""
    inject_temperature: Dec = Decimal("80")
    """Temperature of an injected signal that does not say its own."""
    exit_allocation: Literal["pro_rata", "fifo"] | None = None
    """How the ledger splits this bot's exits across tranches; default: the ledger's setting."""
    frozen_below: Dec = Decimal(25)
    cool_below: Dec = Decimal(50)
    warm_below: Dec = Decimal(75)
    """Temperature bands (DESIGN.md): below ``frozen_below`` no trade, up to ``cool_below``
    signal-driven exits only, up to ``warm_below`` half-size entries, above full size."""

    @model_validator(mode="after")
    def _sane(self) -> Bot:
        if not 0 < self.frozen_below < self.cool_below < self.warm_below <= 100:
            raise ValueError(
                "temperature bands need 0 < frozen_below < cool_below < warm_below <= 100"
            )
        if not (0 < self.buy_threshold <= 1 and 0 < self.sell_threshold <= 1):
            raise ValueError("buy_threshold and sell_threshold are scores in (0, 1]")
        if not 0 < self.exit_fraction <= 1:
            raise ValueError("exit_fraction is a share in (0, 1]")
        if not 0 <= self.inject_temperature <= 100:
            raise ValueError("inject_temperature is a temperature from 0 to 100")
        if self.stop_on_exchange and self.stop_loss_pct is None:
            raise ValueError("stop_on_exchange needs stop_loss_pct (where the stop rests)")
        if not 0 <= self.stop_limit_offset_pct < 100:
            raise ValueError("stop_limit_offset_pct is a percentage from 0 to below 100")
        for name in ("stop_loss_pct", "take_profit_pct", "trailing_stop_pct"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 100:
                raise ValueError(f"{name} is a percentage between 0 and 100")
        return self


class Catalog(Contract):
    products: dict[Token, Product]
    bots: dict[Token, Bot] = Field(default_factory=dict)

    @property
    def all_bots(self) -> dict[str, Bot]:
        """Every bot the ledger may have booked (as :attr:`shared.bots.LiveCatalog.all_bots`,
        which adds bots removed at run time); a file's catalog removes none."""
        return self.bots

    @model_validator(mode="after")
    def _bots_trade_known_products(self) -> Catalog:
        for bot_id, bot in self.bots.items():
            if bot.product_id not in self.products:
                raise ValueError(f"bot {bot_id} trades {bot.product_id}, which is not a product")
        return self


class CatalogError(Exception):
    pass


def read_toml(path: Path, setting: str = "") -> dict:
    """A TOML file as a dict, or a CatalogError saying why not (``setting`` names the variable
    that chose the file)."""
    try:
        return tomllib.loads(path.read_text())
    except OSError as error:
        where = f" ({setting})" if setting else ""
        raise CatalogError(f"cannot read {path}{where}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise CatalogError(f"{path} is not valid TOML: {error}") from None


def load_catalog(path: Path | None = None) -> Catalog:
    path = path or DEFAULT_FILE
    raw = read_toml(path, "TRANCHE_CONFIG_FILE")
    try:
        return Catalog.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()
        )
        raise CatalogError(f"{path}: {problems}") from None
