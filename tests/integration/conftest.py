"""Fixtures of the integration ring: the Coinbase stand-in and its API key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlmodel import Session

from services.safety.store import TABLES as SAFETY_TABLES
from services.safety.store import serialise_sqlite_writers
from shared.db import create_tables, make_engine
from shared.outbox import OutboxMessage
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


@pytest.fixture
def safety_run(database_url: str):
    """Runs a change in one transaction on safety's store (SQLite or PostgreSQL), the way
    ``Service.transact`` does, and returns what it returned."""
    engine = make_engine(database_url)
    serialise_sqlite_writers(engine)
    create_tables(engine, [OutboxMessage, *SAFETY_TABLES])

    def in_transaction(change):
        with Session(engine, expire_on_commit=False) as session:
            result = change(session)
            session.commit()
            return result

    yield in_transaction
    engine.dispose()
