"""One rate limiter for every call to the exchange (Coinbase documents 30 private requests per
second per API key): a token bucket that makes callers wait, never fail."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self,
        per_second: float,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if per_second <= 0:
            raise ValueError("per_second must be positive")
        self.per_second = per_second
        self.burst = burst or max(1, int(per_second))
        self._tokens = float(self.burst)
        self._clock = clock
        self._updated = clock()
        self._lock = asyncio.Lock()
        self.waited_s = 0.0
        """Total time callers waited for a token (a metric and a test hook)."""

    async def acquire(self) -> None:
        """Wait for one token. Callers are served in arrival order."""
        async with self._lock:
            while True:
                now = self._clock()
                self._tokens = min(
                    self.burst, self._tokens + (now - self._updated) * self.per_second
                )
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.per_second
                self.waited_s += wait
                await asyncio.sleep(wait)
