"""Fixtures of the integration ring: the Coinbase stand-in and its API key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.coinbase_standin import ApiKey, CoinbaseStandIn, make_api_key


@pytest.fixture
def key() -> ApiKey:
    return make_api_key()


@pytest.fixture
def standin(key: ApiKey, tmp_path: Path) -> Iterator[CoinbaseStandIn]:
    """The HTTPS stand-in, answering late (a timeout) after 1.5 s."""
    running = CoinbaseStandIn(key, tmp_path, answer_late_s=1.5).start()
    yield running
    running.stop()
