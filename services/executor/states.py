"""The order state machine as a table (pure): for every state an order can be in and every event
that can happen to it (each of Coinbase's statuses, and the executor's own events), either the
next state or a named refusal. Nothing falls through to "ask again" unnoticed: a status no row
knows, ``UNKNOWN_ORDER_STATUS``, and an exchange contradicting a final order are refusals that
raise an alert.

States. Published in order events: ``submitted``, ``open``, ``partially_filled`` and the final
``filled``, ``cancelled``, ``expired``, ``failed``. Local to the executor's store (never an event
status): ``new`` (recorded, not yet confirmed by the exchange), ``pending_cancel`` (a cancel is
asked or queued; the order may still fill) and ``unknown_at_exchange`` (the exchange answers 404
for an order it accepted, past the grace period; settled by an operator).

Fills are not states: any event may bring fills, and an order with fills that is not final is
reported ``partially_filled`` (:func:`services.executor.orders.advance` does that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

NEW: Final = "new"
SUBMITTED: Final = "submitted"
OPEN: Final = "open"
PARTIALLY_FILLED: Final = "partially_filled"
PENDING_CANCEL: Final = "pending_cancel"
UNKNOWN_AT_EXCHANGE: Final = "unknown_at_exchange"
FILLED: Final = "filled"
CANCELLED: Final = "cancelled"
EXPIRED: Final = "expired"
FAILED: Final = "failed"

FINAL_STATES: Final = (FILLED, CANCELLED, EXPIRED, FAILED)
STATES: Final = (
    NEW, SUBMITTED, OPEN, PARTIALLY_FILLED, PENDING_CANCEL, UNKNOWN_AT_EXCHANGE, *FINAL_STATES
)  # fmt: skip

#: Every order status Coinbase Advanced Trade documents (``GET /orders/historical/{id}``).
COINBASE_STATUSES: Final = (
    "PENDING", "QUEUED", "OPEN", "CANCEL_QUEUED", "EDIT_QUEUED", "FILLED", "CANCELLED",
    "EXPIRED", "FAILED", "UNKNOWN_ORDER_STATUS",
)  # fmt: skip
#: The executor's own events.
CANCEL_ASKED: Final = "CANCEL_ASKED"
"""The executor asked the exchange to cancel (time-to-live, halt)."""
NOT_FOUND: Final = "NOT_FOUND_PAST_GRACE"
"""The exchange answered 404 for longer than the grace period and lists no such order."""
RESOLVED_CANCELLED: Final = "RESOLVED_CANCELLED"
RESOLVED_FILLED: Final = "RESOLVED_FILLED"
"""An operator settled an ``unknown_at_exchange`` order by hand (``tranche orders resolve``)."""
LOCAL_EVENTS: Final = (CANCEL_ASKED, NOT_FOUND, RESOLVED_CANCELLED, RESOLVED_FILLED)
EVENTS: Final = (*COINBASE_STATUSES, *LOCAL_EVENTS)


@dataclass(frozen=True)
class Refusal:
    """An event that does not move the order, and why; ``alert``: an operator must look."""

    code: str
    message: str
    alert: bool = False


BEHIND = Refusal("BEHIND", "the exchange reports an earlier stage (a stale read): no change")
SAME = Refusal("SAME", "already in this state")
FINAL_STAYS = Refusal("FINAL", "a final order never changes")
CONTRADICTED = Refusal(
    "FINAL_CONTRADICTED", "the exchange reports another final status than the one on record", True
)
UNKNOWN_STATUS = Refusal(
    "UNKNOWN_ORDER_STATUS", "the exchange does not know the order's status: asked again", True
)
UNRECOGNISED = Refusal(
    "UNRECOGNISED_STATUS", "a status Coinbase does not document: asked again", True
)
NOT_LOST = Refusal("NOT_LOST", "only an order the exchange has lost is resolved by hand")
NOT_ON_EXCHANGE = Refusal("NOT_ON_EXCHANGE", "not on the exchange yet: nothing to cancel there")
ALREADY_LOST = Refusal("ALREADY_LOST", "already marked unknown at the exchange")

Outcome = str | Refusal

# Columns, in order: PENDING, QUEUED, OPEN, CANCEL_QUEUED, EDIT_QUEUED, FILLED, CANCELLED, EXPIRED,
# FAILED, UNKNOWN_ORDER_STATUS, then the local CANCEL_ASKED, NOT_FOUND_PAST_GRACE,
# RESOLVED_CANCELLED, RESOLVED_FILLED. EDIT_QUEUED: an edit is pending (the executor never edits);
# the order still rests.
_S, _O, _P, _PC, _U = SUBMITTED, OPEN, PARTIALLY_FILLED, PENDING_CANCEL, UNKNOWN_AT_EXCHANGE
_F, _C, _E, _X = FILLED, CANCELLED, EXPIRED, FAILED
_ROWS: dict[str, tuple[Outcome, ...]] = {
    NEW:              (_S, _S, _O, _PC, _O, _F, _C, _E, _X, UNKNOWN_STATUS,
                       NOT_ON_EXCHANGE, _U, NOT_LOST, NOT_LOST),
    SUBMITTED:        (SAME, SAME, _O, _PC, _O, _F, _C, _E, _X, UNKNOWN_STATUS,
                       _PC, _U, NOT_LOST, NOT_LOST),
    OPEN:             (BEHIND, BEHIND, SAME, _PC, SAME, _F, _C, _E, _X, UNKNOWN_STATUS,
                       _PC, _U, NOT_LOST, NOT_LOST),
    PARTIALLY_FILLED: (BEHIND, BEHIND, SAME, _PC, SAME, _F, _C, _E, _X, UNKNOWN_STATUS,
                       _PC, _U, NOT_LOST, NOT_LOST),
    # The cancel is ours: the exchange saying it still rests changes nothing (the cancel is
    # asked again on its own schedule), and the order may still fill.
    PENDING_CANCEL:   (BEHIND, BEHIND, SAME, SAME, SAME, _F, _C, _E, _X, UNKNOWN_STATUS,
                       SAME, _U, NOT_LOST, NOT_LOST),
    # The exchange found it again: it goes on from what the exchange says.
    UNKNOWN_AT_EXCHANGE: (_S, _S, _O, _PC, _O, _F, _C, _E, _X, UNKNOWN_STATUS,
                          _PC, ALREADY_LOST, _C, _F),
}  # fmt: skip


def _final_row(state: str) -> tuple[Outcome, ...]:
    by_status = {FILLED: "FILLED", CANCELLED: "CANCELLED", EXPIRED: "EXPIRED", FAILED: "FAILED"}
    row: list[Outcome] = []
    for event in EVENTS:
        if event == by_status[state]:
            row.append(SAME)
        elif event in by_status.values():
            row.append(CONTRADICTED)
        else:
            row.append(FINAL_STAYS)
    return tuple(row)


TRANSITIONS: Final[dict[tuple[str, str], Outcome]] = {
    (state, event): outcome
    for state, row in (_ROWS | {s: _final_row(s) for s in FINAL_STATES}).items()
    for event, outcome in zip(EVENTS, row, strict=True)
}
"""``(state, event) -> next state | Refusal`` for every state and every event."""


def transition(state: str, event: str) -> Outcome:
    """The next state, or why not. A status outside :data:`EVENTS` is refused with an alert
    (Coinbase added one: an operator must look), as is ``UNKNOWN_ORDER_STATUS``."""
    found = TRANSITIONS.get((state, event.upper()))
    if found is None:
        if state not in STATES:
            raise ValueError(f"{state!r} is not an order state")
        return UNRECOGNISED
    return found
