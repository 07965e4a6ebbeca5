"""Following a key-value bucket for good: the watch starts again after any failure."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from shared.logging import get_logger

log = get_logger(__name__)


async def keep_following(
    watch: Callable[[], Awaitable[None]], what: str, retry_s: float = 1.0
) -> None:
    """Run ``watch`` until cancelled, starting it again after any failure (logged), so a view of
    a bucket never silently stops following it. ``watch`` must be safe to run again from the
    start: a bucket watch delivers every current value first."""
    while True:
        try:
            await watch()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning(f"{what}.watch_failed", error=f"{type(error).__name__}: {error}")
            await asyncio.sleep(retry_s)
