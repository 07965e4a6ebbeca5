"""A NATS server with the deployment's users and permissions (deploy/nats/tranche-auth.conf)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.streams import ensure_streams
from tests.support.nats_server import ROOT, NatsServer
from tests.support.nats_users import As
from tranche import credentials

AUTH_CONFIG = ROOT / "deploy" / "nats" / "tranche-auth.conf"


@pytest.fixture
def passwords() -> dict[str, str]:
    return credentials.new_passwords()


@pytest.fixture
def secured(tmp_path: Path, passwords: dict[str, str]) -> Iterator[NatsServer]:
    env = credentials.server_env(passwords)
    server = NatsServer(store_dir=tmp_path / "nats", config=AUTH_CONFIG, env=env).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def users(secured: NatsServer, passwords: dict[str, str]) -> AsyncIterator[As]:
    who = As(secured, passwords)
    setup = await who.connect("admin")  # provisioning: only admin may create streams
    await ensure_streams(setup.jetstream())
    await setup.close()
    yield who
