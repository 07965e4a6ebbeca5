"""Fixtures of the integration ring: the Coinbase stand-in and its API key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.db import make_engine
from tests.support.coinbase_standin import ApiKey, CoinbaseStandIn, make_api_key
from tests.support.live_executor import Live, start_live, stop_live


@pytest.fixture
def key() -> ApiKey:
    return make_api_key()


@pytest.fixture
def standin(key: ApiKey, tmp_path: Path) -> Iterator[CoinbaseStandIn]:
    """The HTTPS stand-in, answering late (a timeout) after 1.5 s."""
    running = CoinbaseStandIn(key, tmp_path, answer_late_s=1.5).start()
    yield running
    running.stop()


@pytest.fixture
async def live(
    standin: CoinbaseStandIn, key: ApiKey, nats_url: str, tmp_path: Path
) -> AsyncIterator[Live]:
    """An executor in production mode against the stand-in (polls every 0.05 s up to 0.4 s)."""
    running = await start_live(standin, key, nats_url, tmp_path)
    try:
        yield running
    finally:
        await stop_live(running)


@pytest.fixture
def engine(database_url: str):
    """An engine on the test's database (SQLite or PostgreSQL), disposed after the test."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()
