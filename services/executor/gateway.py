"""Every exchange call goes through here: one rate limiter, the blocking client run off the event
loop, and 429/5xx retried with exponential backoff and full jitter (or the exchange's
``Retry-After``). What still fails after the last attempt is raised to the caller, which treats it
as "unknown, ask again later", never as "failed"."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import Counter

from services.executor.exchanges.base import ExchangeError
from services.executor.ratelimit import RateLimiter
from shared.logging import get_logger

T = TypeVar("T")
log = get_logger(__name__)

CALLS = Counter("tranche_executor_exchange_calls_total", "Exchange calls", ["call", "outcome"])


class Gateway:
    def __init__(
        self,
        exchange: Any,
        limiter: RateLimiter,
        *,
        attempts: int = 5,
        base_delay_s: float = 0.25,
        max_delay_s: float = 8.0,
        seed: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.exchange = exchange
        self.limiter = limiter
        self.attempts = attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self._random = random.Random(seed)
        self._sleep = sleep
        self.retries = 0
        self.observer: Callable[[ExchangeError | None], None] | None = None
        """Told every call's outcome (the executor's exchange health)."""

    def delay(self, attempt: int, error: ExchangeError) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]; Retry-After wins."""
        if error.retry_after_s is not None:
            return min(self.max_delay_s, error.retry_after_s)
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return self._random.uniform(0, ceiling)

    async def call(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        for attempt in range(1, self.attempts + 1):
            await self.limiter.acquire()
            try:
                result = await asyncio.to_thread(fn, *args)
            except ExchangeError as error:
                CALLS.labels(name, error.code).inc()
                if self.observer is not None:
                    self.observer(error)
                if not error.retryable or attempt == self.attempts:
                    raise
                wait = self.delay(attempt, error)
                self.retries += 1
                log.warning(
                    "exchange.retry", call=name, code=error.code, attempt=attempt, wait_s=wait
                )
                await self._sleep(wait)
            else:
                CALLS.labels(name, "ok").inc()
                if self.observer is not None:
                    self.observer(None)
                return result
        raise AssertionError("unreachable")
