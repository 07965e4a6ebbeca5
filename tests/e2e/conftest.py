"""The end-to-end ring: the four services as real processes against a real nats-server,
started by the same code as ``tranche up`` (no replay; the tests publish the market data)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import nats
import pytest

from tests.support.nats_server import free_port
from tranche import credentials
from tranche.stack import EmbeddedStack, StackConfig

HERE = Path(__file__).resolve().parent
T = TypeVar("T")


def stack_config(data_dir: Path, services: Iterable[str], **settings: Any) -> StackConfig:
    """A stack of ``services`` on free ports, without replay, trading the e2e bots (unless
    ``settings`` say otherwise)."""
    return StackConfig(
        data_dir=data_dir,
        nats_port=free_port(),
        nats_monitor_port=free_port(),
        ports={name: free_port() for name in services},
        replay="",
        **({"config_file": HERE / "bots.toml"} | settings),
    )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    config = stack_config(
        tmp_path_factory.mktemp("stack"),
        ("signal", "safety", "executor", "ledger"),
        extra_env={"TRANCHE_OUTBOX_POLL_S": "0.5"},
    )
    with started(config) as running:
        yield running


@pytest.fixture
def cli_trusts_stack(stack: EmbeddedStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's commands trust an answer signed by this stack's safety (its data
    directory's key, not the suite's own pair)."""
    _, public_key = credentials.signing_keys(stack.config.data_dir.resolve())
    monkeypatch.setenv("TRANCHE_SIGNING_PUBLIC_KEY", public_key.read_text())


@contextmanager
def started(config: StackConfig) -> Iterator[EmbeddedStack]:
    """An embedded stack, running until the block ends."""
    running = EmbeddedStack(config)
    running.start()
    try:
        yield running
    finally:
        running.stop()
    # The stack runs the deployments' NATS permissions: a service refused anything it tried is a
    # gap in deploy/nats/permissions.conf (the refusal is only a warning in its log).
    refused = [
        f"{log.name}: {line[:300]}"
        for log in sorted(running.logs.glob("*.log"))
        for line in log.read_text(errors="replace").splitlines()
        if "permissions violation" in line.lower()
    ]
    assert not refused, "\n".join(refused)


def publish(nats_url: str, subject: str, payload: bytes) -> None:
    """What `nats pub SUBJECT PAYLOAD` does: a bare core publish, no headers."""

    async def send() -> None:
        nc = await nats.connect(nats_url)
        await nc.publish(subject, payload)
        await nc.flush()
        await nc.close()

    asyncio.run(send())


_market_clock = [datetime(2018, 1, 20, tzinfo=UTC)]


def ticker(nats_url: str, price: str, after: timedelta = timedelta(hours=1)) -> datetime:
    """Publish a price ``after`` the previous tick of the session (the services ignore a tick
    older than one they saw, so every test moves market time forward) and let it land."""
    _market_clock[0] += after
    at = _market_clock[0]
    body = f'{{"product_id":"ETH-BTC","price":"{price}","time":"{at.isoformat()}"}}'
    publish(nats_url, "tranche.market.ticker.ETH-BTC", body.encode())
    time.sleep(0.2)  # core NATS is fire-and-forget: give the services a moment to see it
    return at


def wait_for(probe: Callable[[], T | None], timeout: float = 60.0, what: str = "") -> T:
    """Poll until ``probe`` returns something truthy; generous, because a loaded machine is slow
    and the wait ends as soon as the answer is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what or probe}")


def get_json(url: str) -> Any:
    response = httpx.get(url, timeout=5)
    return response.json() if response.status_code == 200 else None


def position_of(stack: EmbeddedStack, bot: str) -> Callable[[], dict | None]:
    def probe() -> dict | None:
        found = get_json(f"{stack.config.url('ledger')}/positions/{bot}")
        return found["position"] if found and found["position"]["status"] == "open" else None

    return probe


def stream_messages(nats_url: str, stream: str, subject: str | None) -> list[Any]:
    """Every message a stream holds on one subject, or on any with ``None`` (read with direct
    gets: no consumer)."""

    async def read() -> list[Any]:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        info = await js.stream_info(stream)
        found = []
        for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
            try:
                message = await js.get_msg(stream, seq)
            except nats.js.errors.NotFoundError:
                continue
            if subject is None or message.subject == subject:
                found.append(message)
        await nc.close()
        return found

    return asyncio.run(read())
