from __future__ import annotations

from decimal import Decimal

from pydantic import Field

from shared.settings import ServiceSettings


class ExecutorSettings(ServiceSettings):
    service: str = "executor"
    mock_fee_rate: Decimal = Field(default=Decimal("0.006"), ge=0, lt=1)
    """Taker fee of the mock exchange (Coinbase's entry tier charges 0.6 %)."""
    max_price_age_s: float = Field(default=0, ge=0)
    """Refuse to fill at a price older than this (event time vs. the order's); 0 = no limit."""
