"""The safety decision (pure): ``decide(intent, state, limits, now) -> Decision``.

Every rule that fails adds a reason; an intent is approved only when none does. ``now`` is the
intent's market time (event time), so a replay decides the same way twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.contracts import Reason, TradeIntent

ORDER_NAMESPACE = uuid.UUID("0b8e9a3c-1f5e-4a3e-8c2d-7d6b5a4c3e21")


def client_order_id_for(intent_id: str) -> str:
    """Deterministic: one intent can only ever name one exchange order."""
    return str(uuid.uuid5(ORDER_NAMESPACE, intent_id))


@dataclass(frozen=True)
class Limits:
    entry_cooldown: timedelta
    exit_cooldown: timedelta


@dataclass(frozen=True)
class BotState:
    """What safety remembers of a bot in one mode (event times of its last approvals)."""

    last_entry_at: datetime | None = None
    last_exit_at: datetime | None = None


@dataclass(frozen=True)
class Decision:
    approved: bool
    reasons: tuple[Reason, ...] = field(default_factory=tuple)
    state_after: BotState = field(default_factory=BotState)


def _wait(since: datetime, cooldown: timedelta, now: datetime) -> timedelta | None:
    remaining = since + cooldown - now
    return remaining if remaining > timedelta(0) else None


def _seconds(delta: timedelta) -> str:
    total = int(delta.total_seconds() + 0.999)
    return f"{total // 60}m{total % 60:02d}s" if total >= 60 else f"{total}s"


def decision_time(intent: TradeIntent) -> datetime:
    """Event time: the market time the intent was made at (its own time without a price)."""
    return intent.market_time or intent.time


def decide(intent: TradeIntent, state: BotState, limits: Limits, now: datetime) -> Decision:
    """Approve, or reject with every reason that applies. ``now`` is event time
    (:func:`decision_time`)."""
    reasons: list[Reason] = []
    if intent.reference_price is None or intent.market_time is None:
        reasons.append(
            Reason(
                code="NO_MARKET_DATA",
                message=f"no price for {intent.product_id} yet: no price, no trade",
            )
        )
    if intent.action in ("entry", "add") and state.last_entry_at is not None:
        wait = _wait(state.last_entry_at, limits.entry_cooldown, now)
        if wait:
            reasons.append(
                Reason(
                    code="ENTRY_COOLDOWN",
                    message=(
                        f"bot {intent.bot_id} entered at {state.last_entry_at:%Y-%m-%d %H:%M:%S}Z; "
                        f"entries are {_seconds(limits.entry_cooldown)} apart, "
                        f"{_seconds(wait)} to go"
                    ),
                )
            )
    if state.last_exit_at is not None:
        wait = _wait(state.last_exit_at, limits.exit_cooldown, now)
        if wait:
            reasons.append(
                Reason(
                    code="EXIT_COOLDOWN",
                    message=(
                        f"bot {intent.bot_id} exited at {state.last_exit_at:%Y-%m-%d %H:%M:%S}Z; "
                        f"{_seconds(wait)} of the {_seconds(limits.exit_cooldown)} cooldown to go"
                    ),
                )
            )
    if reasons:
        return Decision(False, tuple(reasons), state)
    if intent.action == "exit":
        after = BotState(last_entry_at=state.last_entry_at, last_exit_at=now)
    else:
        after = BotState(last_entry_at=now, last_exit_at=state.last_exit_at)
    return Decision(True, (), after)
