"""Lock-step replay (pure): has every intent run its whole course through the services?

A replay at full speed publishes its next tick while the intents of the last one are still on
their way through safety, the executor and the ledger, so what the next tick decides (entry or
add, the position a protective exit sells, safety's one-order-in-flight rule) depends on how far
they got. In lock step the feed waits after each tick until every intent made so far is
*settled*:

* safety **rejected** it; or
* it asks a protective stop on the exchange, and the signal service has **heard** its order
  rest (``open``) or end: a stop stays live for days, and what the next tick decides (the
  signal's own stop-loss stands down while the stop rests) depends on the signal knowing; or
* safety approved it, its order reached a **final** status, and, when it filled something,
  * the signal's own view of the bot's position **reflects every fill** seen so far (the
    ledger's ``sequence`` counts the bot's fills), and
  * safety has **consumed the order's final event** (its durable consumer acknowledged that
    stream sequence), so its count of orders in flight no longer has it.

This module only keeps the facts and answers the question; ``lockstep.py`` feeds it from NATS.
No clock inside: callers pass monotonic seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.contracts import FINAL_ORDER_STATUSES

HEARD = frozenset({"open", "partially_filled", *FINAL_ORDER_STATUSES})
"""A stop's statuses after which the signal service's view of it holds until the next event."""

WAITING_FOR = {
    "decision": "safety's decision",
    "order": "its order to reach a final status",
    "position": "the bot's position to show the order's fills",
    "safety": "safety to record the end of its order",
    "stop": "the signal service to hear its stop rest on the exchange (or end)",
}


@dataclass
class _Intent:
    bot_id: str
    created_at: float
    approved: bool | None = None
    final_status: str | None = None
    final_sequence: int | None = None
    """Stream sequence of the order's final event (``None``: not known)."""
    mode: str = "mock"
    filled: bool = False
    stop: bool = False
    heard: str | None = None
    """A stop's last status the signal service has handled (``None``: none yet)."""


@dataclass(frozen=True)
class Unsettled:
    intent_id: str
    bot_id: str
    waiting_for: str
    """A key of :data:`WAITING_FOR`."""
    since: float

    def describe(self) -> str:
        what = WAITING_FOR[self.waiting_for]
        return f"intent {self.intent_id} of bot {self.bot_id} waits for {what}"


@dataclass
class SettleTracker:
    """What is known about every intent the replay made and has not seen settle yet.

    Facts may arrive in any order (a decision before the intent is registered, say): they are
    kept per intent id and applied when it is. Settled intents are forgotten.
    """

    _open: dict[str, _Intent] = field(default_factory=dict)
    _early: dict[str, _Intent] = field(default_factory=dict)
    _fills: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    _sequence: dict[tuple[str, str], int] = field(default_factory=dict)
    _consumed: int = 0
    _events: dict[str, int] = field(default_factory=dict)
    """Stream sequence of every order event seen, by message id."""

    # -- facts ------------------------------------------------------------------------------------

    def created(self, intent_id: str, bot_id: str, now: float, stop: bool = False) -> None:
        """The signal made (and stored) an intent (``stop``: a protective stop's)."""
        early = self._early.pop(intent_id, None)
        intent = early or _Intent(bot_id=bot_id, created_at=now)
        intent.bot_id, intent.created_at, intent.stop = bot_id, now, stop
        self._open[intent_id] = intent

    def stop_heard(self, intent_id: str, status: str) -> None:
        """The signal service handled an order event of this stop (its view is up to date)."""
        self._fact(intent_id).heard = status

    def decided(self, intent_id: str, approved: bool) -> None:
        """Safety approved or rejected it."""
        self._fact(intent_id).approved = approved

    def order_event(
        self,
        intent_id: str,
        bot_id: str,
        mode: str,
        status: str,
        trade_ids: list[str],
        sequence: int | None,
        message_id: str | None = None,
    ) -> None:
        """An order event (any status) with the trade ids of the fills it brings and its stream
        sequence. Fills are counted per bot and mode whoever's order they belong to."""
        if message_id is not None and sequence is not None:
            self._events[message_id] = sequence
        self._fills.setdefault((bot_id, mode), set()).update(trade_ids)
        intent = self._fact(intent_id)
        intent.mode = mode
        intent.filled = intent.filled or bool(trade_ids)
        if status in FINAL_ORDER_STATUSES and intent.final_status is None:
            intent.final_status, intent.final_sequence = status, sequence

    def position(self, bot_id: str, mode: str, sequence: int) -> None:
        """The signal's view of a bot's position moved to ``sequence`` (fills booked)."""
        key = (bot_id, mode)
        self._sequence[key] = max(self._sequence.get(key, 0), sequence)

    def consumed(self, stream_sequence: int) -> None:
        """Safety's order-event consumer has acknowledged everything up to this sequence."""
        self._consumed = max(self._consumed, stream_sequence)

    # -- questions ------------------------------------------------------------------------------

    def waiting_for(self, intent_id: str) -> str | None:
        """What a registered intent still waits for (``None``: settled or unknown)."""
        intent = self._open.get(intent_id)
        if intent is None:
            return None
        if intent.approved is None:
            return "decision"
        if not intent.approved:
            return None
        if intent.stop:
            return None if intent.heard in HEARD else "stop"
        if intent.final_status is None:
            return "order"
        key = (intent.bot_id, intent.mode)
        if intent.filled and self._sequence.get(key, 0) < len(self._fills.get(key, ())):
            return "position"
        if intent.final_sequence is not None and self._consumed < intent.final_sequence:
            return "safety"
        return None

    def position_waits_for(self, bot_id: str, last_order_event_id: str | None) -> str | None:
        """What a position of ``bot_id`` booked from the order event ``last_order_event_id``
        waits for before the signal service acts on it: ``"event"`` (the event is not seen yet)
        or ``"safety"`` (safety has not acknowledged it yet); ``None``: nothing. Only while one
        of this replay's orders of the bot is under way: a position stored before the replay
        began waits for nothing.

        The backtest hands an order event to safety before the ledger books it, so a stop the
        position asks at once finds the order final in safety's view; the services would race
        the ledger's position against safety's own consumer of order events."""
        under_way = any(
            intent.bot_id == bot_id and intent.approved and not intent.stop
            for intent in self._open.values()
        )
        if not under_way or last_order_event_id is None:
            return None
        sequence = self._events.get(last_order_event_id)
        if sequence is None:
            return "event"
        return "safety" if self._consumed < sequence else None

    def unsettled(self) -> list[Unsettled]:
        """Every registered intent not settled yet, oldest first; forgets the settled ones."""
        waiting = []
        for intent_id, intent in list(self._open.items()):
            what = self.waiting_for(intent_id)
            if what is None:
                del self._open[intent_id]
            else:
                waiting.append(Unsettled(intent_id, intent.bot_id, what, intent.created_at))
        return sorted(waiting, key=lambda item: item.since)

    def overdue(self, now: float, timeout_s: float) -> Unsettled | None:
        """The oldest intent unsettled for longer than ``timeout_s``, if any."""
        late = [item for item in self.unsettled() if now - item.since > timeout_s]
        return late[0] if late else None

    def _fact(self, intent_id: str) -> _Intent:
        found = self._open.get(intent_id) or self._early.get(intent_id)
        if found is None:
            # Not registered (yet): an intent of another source, or its decision overtook it.
            found = self._early[intent_id] = _Intent(bot_id="", created_at=0.0)
        return found
