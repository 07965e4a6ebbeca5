"""When to ask the exchange about one order next (pure: callers pass the monotonic time).

Every order has one schedule: its next poll, its next cancel attempt (once a cancel is wanted),
and its request budget. Every outcome but a change backs off, whatever the error: a revoked key,
a 404, a 429 or a 5xx all double the interval up to the cap (and a ``Retry-After`` is never
undercut), so an exchange that is failing is asked less, not more. The cancel has a schedule of
its own, so a time-to-live cancel goes out whatever the polls return.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


def backoff(previous_s: float | None, changed: bool, base_s: float, cap_s: float) -> float:
    """The next interval: back to ``base_s`` after a change, doubled (up to ``cap_s``) while
    nothing changes or the exchange fails."""
    if changed or previous_s is None:
        return base_s
    return min(cap_s, previous_s * 2)


@dataclass
class RequestBudget:
    """At most ``limit`` exchange requests for one order in any ``window_s`` seconds: one order
    never eats the account's shared rate limit, whatever it meets."""

    limit: int
    window_s: float = 60.0
    _sent: deque[float] = field(default_factory=deque)

    def wait_s(self, now: float) -> float:
        """Seconds until one more request fits (0: it fits now)."""
        while self._sent and now - self._sent[0] >= self.window_s:
            self._sent.popleft()
        if len(self._sent) < self.limit:
            return 0.0
        return self._sent[0] + self.window_s - now

    def spend(self, now: float) -> None:
        self._sent.append(now)


@dataclass
class Due:
    """One order's schedule (monotonic seconds)."""

    at: float
    """The next poll."""
    interval_s: float | None = None
    waited_for_fills: int = 0
    cancel_at: float | None = None
    """The next cancel attempt; ``None``: no cancel wanted (or none asked yet)."""
    cancel_interval_s: float | None = None
    lost_since: float | None = None
    """When the exchange first answered 404 for an order it had accepted (then every 404)."""
    budget: RequestBudget | None = None

    def after_poll(
        self,
        now: float,
        changed: bool,
        base_s: float,
        cap_s: float,
        retry_after_s: float | None = None,
        ttl_in_s: float | None = None,
    ) -> None:
        """Schedule the next poll. ``ttl_in_s``: seconds until the order's time-to-live runs
        out; a poll is brought forward to it only while it is still ahead, never to a past
        deadline (that made a tight loop whenever polling failed)."""
        self.interval_s = backoff(self.interval_s, changed, base_s, cap_s)
        if retry_after_s is not None:
            self.interval_s = max(self.interval_s, min(retry_after_s, cap_s))
        self.at = now + self.interval_s
        if ttl_in_s is not None and ttl_in_s > 0:
            self.at = min(self.at, now + ttl_in_s)
        if self.cancel_at is not None and self.cancel_at > now:
            self.at = min(self.at, self.cancel_at)

    def cancel_due(self, now: float) -> bool:
        return self.cancel_at is not None and self.cancel_at <= now

    def after_cancel(self, now: float, base_s: float, cap_s: float) -> None:
        """A cancel was asked (answered or not): the next attempt, if the order still rests,
        backs off like the polls do."""
        self.cancel_interval_s = backoff(self.cancel_interval_s, False, base_s, cap_s)
        self.cancel_at = now + self.cancel_interval_s
