"""Waiting on a condition in async tests: poll, never sleep a guessed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def eventually(
    probe: Callable[[], Any], what: str = "", timeout: float = 30.0, every: float = 0.05
) -> Any:
    """Call ``probe`` (plain or async) until it returns something truthy, and return that; fail
    naming ``what`` after ``timeout`` seconds (generous: a loaded machine is slow, not wrong)."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or probe}")
        await asyncio.sleep(every)
