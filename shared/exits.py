"""Which exits are standing orders (DESIGN.md promise 11): the reason codes the signal service
puts on a protective or flatten exit, and that safety reads to know which rules such an exit
passes (docs/safety.md). One place, so the two services cannot drift apart."""

from __future__ import annotations

from typing import Literal

from shared.contracts import TradeIntent

STOP_ON_EXCHANGE = "STOP_ON_EXCHANGE"
"""A protective stop-limit resting on the exchange (shared/stops.py), and the exit its fill is."""
PROTECTIVE_EXIT_CODES = frozenset({"STOP_LOSS", "TAKE_PROFIT", "TRAILING_STOP", STOP_ON_EXCHANGE})
FLATTEN = "FLATTEN"

ExitKind = Literal["signal", "protective", "flatten"]


def exit_kind(intent: TradeIntent) -> ExitKind | None:
    """``None`` for an entry or an add; else what asked for the exit."""
    if intent.action != "exit":
        return None
    if intent.reason.code == FLATTEN:
        return "flatten"
    if intent.reason.code in PROTECTIVE_EXIT_CODES:
        return "protective"
    return "signal"


def sells_everything(intent: TradeIntent) -> bool:
    """A protective or flatten exit sells the whole position, whatever size it was asked with."""
    return exit_kind(intent) in ("protective", "flatten")
