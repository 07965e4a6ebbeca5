"""Fixtures every ring shares, through ``conftest.py`` rather than copy-paste."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import signing
from tests.support.nats_server import NatsServer
from tests.support.postgres import fresh_database


@pytest.fixture(autouse=True)
def signing_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Safety signs and the executor verifies with the suite's key pair (shared/signing.py),
    the executor signs its order events and their readers verify with the suite's other pair,
    unless a test or the embedded stack gives them others."""
    monkeypatch.setenv("TRANCHE_SIGNING_KEY", signing.PRIVATE_KEY)
    monkeypatch.setenv("TRANCHE_SIGNING_PUBLIC_KEY", signing.PUBLIC_KEY)
    monkeypatch.setenv("TRANCHE_ORDER_SIGNING_KEY", signing.ORDER_PRIVATE_KEY)
    monkeypatch.setenv("TRANCHE_ORDER_SIGNING_PUBLIC_KEY", signing.ORDER_PUBLIC_KEY)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real NATS server with JetStream (sync_interval: always) of this test's own."""
    server = NatsServer(store_dir=tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on SQLite (WAL, a file) and on PostgreSQL (a fresh database)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
    else:
        with fresh_database() as url:
            yield url
