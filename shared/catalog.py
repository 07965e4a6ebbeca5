"""Products (the exchange's size rules) and bots, read from one TOML file.

This is reference data every service reads the same way; the rules that use it live in the
services. A bad file stops the service with the bot or product and the field at fault.
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

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


class Bot(Contract):
    product_id: Token
    quote_size: PositiveDec
    """Quote currency spent by one full-size entry (a warm signal spends half)."""
    strategy: Literal["none", "momentum"] = "none"
    lookback: int = Field(default=20, ge=2, le=10_000)
    threshold_pct: Dec = Decimal("0.5")
    inject_temperature: Dec = Decimal("80")
    """Temperature of an injected signal that does not say its own."""
    exit_allocation: Literal["pro_rata", "fifo"] | None = None
    """How the ledger splits this bot's exits across tranches; default: the ledger's setting."""


class Catalog(Contract):
    products: dict[Token, Product]
    bots: dict[Token, Bot] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _bots_trade_known_products(self) -> Catalog:
        for bot_id, bot in self.bots.items():
            if bot.product_id not in self.products:
                raise ValueError(f"bot {bot_id} trades {bot.product_id}, which is not a product")
        return self


class CatalogError(Exception):
    pass


def load_catalog(path: Path | None = None) -> Catalog:
    path = path or DEFAULT_FILE
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as error:
        raise CatalogError(f"cannot read {path} (TRANCHE_CONFIG_FILE): {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise CatalogError(f"{path} is not valid TOML: {error}") from None
    try:
        return Catalog.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()
        )
        raise CatalogError(f"{path}: {problems}") from None
