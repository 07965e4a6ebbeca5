"""Circuit breakers (pure): facts about finished orders in, trips out.

A trip moves a bot (or every bot) to ``reducing`` (exits only) by default. The store evaluates the
breakers whenever an order becomes final, in the same transaction that records it, and sends one
``tranche.safety.events`` message per trip. A tripped breaker resets ``reset_after`` later in event
time (the next decision after that instant sends the reset event) or when an operator resumes; the
facts before a reset or a resume no longer count, so a breaker never re-trips on old losses.

Money is quote currency; windows are rolling in event time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from shared.contracts import TradingState
from shared.money import format_decimal

ZERO = Decimal(0)


@dataclass(frozen=True)
class BreakerLimits:
    """``None`` switches a breaker off."""

    losing_exits_in_a_row: int | None = 3
    daily_loss_per_bot: Decimal | None = None
    daily_loss_all_bots: Decimal | None = None
    weekly_loss_per_bot: Decimal | None = None
    order_failures: int | None = 3
    order_failure_window: timedelta = timedelta(hours=1)
    trip_to: TradingState = "reducing"
    reset_after: timedelta | None = timedelta(hours=24)


@dataclass(frozen=True)
class ExitResult:
    """A finished exit and the P&L it realized (quote, fees included), as the ledger booked it:
    safety never computes realized P&L itself (``store.book_realized``)."""

    time: datetime
    realized_pnl: Decimal


@dataclass(frozen=True)
class Trip:
    code: str
    message: str
    bot_id: str | None
    """``None``: every bot."""
    state: TradingState
    resets_at: datetime | None


def _loss(results: Sequence[ExitResult], since: datetime) -> Decimal:
    return -sum((r.realized_pnl for r in results if r.time > since), ZERO)


def bot_trips(
    bot_id: str,
    exits: Sequence[ExitResult],
    failures: Sequence[datetime],
    limits: BreakerLimits,
    now: datetime,
) -> list[Trip]:
    """Breakers of one bot. ``exits`` oldest first and ``failures`` (times of failed orders)
    hold only facts counted since the bot's last reset."""
    trips: list[Trip] = []
    resets_at = now + limits.reset_after if limits.reset_after else None

    def trip(code: str, message: str) -> None:
        trips.append(Trip(code, message, bot_id, limits.trip_to, resets_at))

    streak = limits.losing_exits_in_a_row
    if streak is not None and len(exits) >= streak:
        last = exits[-streak:]
        if all(r.realized_pnl < 0 for r in last):
            total = sum((r.realized_pnl for r in last), ZERO)
            trip(
                "LOSING_STREAK",
                f"bot {bot_id} lost on {streak} exits in a row ({format_decimal(total)} in all)",
            )
    day_loss = _loss(exits, now - timedelta(days=1))
    if limits.daily_loss_per_bot is not None and day_loss > limits.daily_loss_per_bot:
        trip(
            "DAILY_LOSS",
            f"bot {bot_id} lost {format_decimal(day_loss)} in 24 hours, "
            f"more than {format_decimal(limits.daily_loss_per_bot)}",
        )
    week_loss = _loss(exits, now - timedelta(days=7))
    if limits.weekly_loss_per_bot is not None and week_loss > limits.weekly_loss_per_bot:
        trip(
            "WEEKLY_LOSS",
            f"bot {bot_id} lost {format_decimal(week_loss)} in 7 days, "
            f"more than {format_decimal(limits.weekly_loss_per_bot)}",
        )
    if limits.order_failures is not None:
        recent = [t for t in failures if t > now - limits.order_failure_window]
        if len(recent) >= limits.order_failures:
            trip(
                "ORDER_FAILURES",
                f"bot {bot_id} had {len(recent)} failed orders within "
                f"{limits.order_failure_window}",
            )
    return trips


def all_bots_trips(exits: Sequence[ExitResult], limits: BreakerLimits, now: datetime) -> list[Trip]:
    """The breaker over every bot: realized loss in 24 hours, summed in quote currency (only
    meaningful when the bots share a quote currency, which is why it is off by default)."""
    if limits.daily_loss_all_bots is None:
        return []
    loss = _loss(exits, now - timedelta(days=1))
    if loss <= limits.daily_loss_all_bots:
        return []
    return [
        Trip(
            "DAILY_LOSS_ALL_BOTS",
            f"all bots lost {format_decimal(loss)} in 24 hours, "
            f"more than {format_decimal(limits.daily_loss_all_bots)}",
            None,
            limits.trip_to,
            now + limits.reset_after if limits.reset_after else None,
        )
    ]


STRICTNESS: dict[str, int] = {"active": 0, "reducing": 1, "halted": 2}


def stricter(a: TradingState, b: TradingState) -> TradingState:
    """The stricter of two trading states: the system's and the bot's."""
    return a if STRICTNESS[a] >= STRICTNESS[b] else b
