"""How the exchange has been answering (pure: callers pass the monotonic time): ``reachable``,
``degraded`` (429s, 5xx, timeouts, refused connections), ``unreachable`` (degraded with no
answer at all for longer than ``unreachable_after_s``) or ``refused`` (401/403: the key is
wrong, revoked or lacks a permission). Every exchange call reports its outcome here; ``/ready``
and the dashboard show the result with the reason, and the executor keeps serving reads."""

from __future__ import annotations

from dataclasses import dataclass

from services.executor.exchanges.base import ExchangeError

REFUSED_CODES = frozenset({"EXCHANGE_UNAUTHORIZED"})
DEGRADED_CODES = frozenset({"RATE_LIMITED", "EXCHANGE_UNAVAILABLE", "OUTCOME_UNKNOWN"})


@dataclass
class ExchangeHealth:
    unreachable_after_s: float = 60.0
    state: str = "not asked yet"
    reason: str = ""
    last_answer_at: float | None = None
    """When any call last got an answer or a failure (the heartbeat asks when it is old)."""
    _failing_since: float | None = None

    def record(self, error: ExchangeError | None, now: float) -> None:
        """One call's outcome. An answer the exchange gave on purpose (an order refused, a
        404) shows it is reachable."""
        if error is not None and error.code in REFUSED_CODES:
            self.state, self.reason = "refused", error.message
            self._failing_since = self._failing_since or now
        elif error is not None and error.code in DEGRADED_CODES:
            self._failing_since = self._failing_since if self._failing_since is not None else now
            long = now - self._failing_since >= self.unreachable_after_s
            self.state = "unreachable" if long else "degraded"
            self.reason = error.message
        else:
            self.state, self.reason, self._failing_since = "reachable", "", None

    @property
    def ready(self) -> bool:
        """Whether the executor can trade: not while the key is refused or nothing answers."""
        return self.state not in ("refused", "unreachable")

    def describe(self) -> str:
        return f"{self.state}: {self.reason}" if self.reason else self.state
