"""What a backtest hands its report: the run's facts, nothing computed from them.

The engine (``tranche.backtest.engine``) fills a :class:`BacktestResult` from what the cores
decided and booked; the report (``tranche.backtest.report``) derives every figure from it. Keeping
the two apart lets the figures be tested on hand-made results and the engine on its parity with
the services.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal


@dataclass(frozen=True)
class Mark:
    """A product's price at a moment: one closed candle (its close, at its close time)."""

    at: datetime
    product_id: str
    price: Decimal


@dataclass(frozen=True)
class BookedFill:
    """One fill as the ledger booked it. ``reason`` is why the order was asked: the intent's
    reason (``ENTRY``, ``SIGNAL_EXIT``, ``STOP_LOSS``, ``TAKE_PROFIT``, ``TRAILING_STOP``, ...)."""

    at: datetime
    bot_id: str
    product_id: str
    side: Literal["BUY", "SELL"]
    price: Decimal
    size: Decimal
    fee: Decimal
    reason: str


@dataclass(frozen=True)
class RoundTrip:
    """A position from its first entry to flat, as the ledger closed it. ``realized_pnl`` is net
    of every fee paid on it, in the quote currency; ``cost_basis`` is what its entries spent
    (fees included)."""

    bot_id: str
    product_id: str
    opened_at: datetime
    closed_at: datetime
    tranches: int
    quantity: Decimal
    cost_basis: Decimal
    realized_pnl: Decimal
    fees: Decimal
    exit_reason: str


@dataclass(frozen=True)
class OpenPosition:
    """A position still open when the data ended, marked at the product's last price."""

    bot_id: str
    product_id: str
    opened_at: datetime
    tranches: int
    quantity: Decimal
    cost_basis: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    fees: Decimal


@dataclass(frozen=True)
class Decision:
    """Safety's answer to one intent: approved, or rejected with its reason code."""

    at: datetime
    bot_id: str
    intent_id: str
    approved: bool
    reason: str | None = None


@dataclass(frozen=True)
class BreakerTrip:
    """A circuit breaker or halt that safety raised (``bot_id`` None: system-wide)."""

    at: datetime
    bot_id: str | None
    breaker: str
    detail: str = ""


@dataclass(frozen=True)
class BotRun:
    """One bot's configuration as the run used it. ``capital`` is the quote currency the bot can
    commit at most (its full-size entry times the three-tranche cap): the base for its returns."""

    bot_id: str
    product_id: str
    quote_currency: str
    capital: Decimal


@dataclass
class BacktestResult:
    """Everything one backtest run produced, in market-time order within each list."""

    start: datetime
    end: datetime
    bots: list[BotRun]
    marks: list[Mark] = field(default_factory=list)
    fills: list[BookedFill] = field(default_factory=list)
    round_trips: list[RoundTrip] = field(default_factory=list)
    open_positions: list[OpenPosition] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    breakers: list[BreakerTrip] = field(default_factory=list)
    candles: int = 0
    fingerprint: str | None = None
    """The journal fingerprint, comparable with ``tranche replay``'s."""
    fee_rate: Decimal | None = None
    """The fee rate the run's fills paid (0.006 = 0.6 %), if one rate applied to all of them; the
    report charges buy-and-hold the same. None: buy-and-hold is shown without fees."""
