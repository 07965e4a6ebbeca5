"""The NATS server killed, its stream data deleted and the streams refilled from the outboxes,
with the services left running: each one sees its streams and durable consumers gone on
reconnect, creates (or re-checks) them and goes on consuming, with no restart."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.conftest import (
    get_json,
    position_of,
    publish,
    stack_config,
    started,
    stream_messages,
    ticker,
    wait_for,
)
from tests.faults.test_nats_restart import all_ready
from tests.faults.workload import replay_outboxes, wipe_nats
from tranche.stack import EmbeddedStack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """A stack of its own: its NATS data is deleted, which the shared one must not see."""
    config = stack_config(
        tmp_path_factory.mktemp("wipe"),
        ("signal", "safety", "executor", "ledger"),
        extra_env={"TRANCHE_OUTBOX_POLL_S": "0.5"},
    )
    with started(config) as running:
        yield running


def test_services_heal_after_a_nats_wipe_without_a_restart(own_stack: EmbeddedStack) -> None:
    stack = own_stack
    since = datetime.now(UTC) - timedelta(minutes=1)
    url = stack.config.admin_url
    ticker(url, "0.09")
    publish(url, "tranche.signals.inject.nats-1", b'{"side":"buy"}')
    wait_for(position_of(stack, "nats-1"), what="a position before the wipe")
    pids = {name: process.pid for name, process in stack.services.items()}

    wipe_nats(stack)
    assert replay_outboxes(stack, since) > 0
    wait_for(lambda: all_ready(stack), timeout=60, what="every service to reconnect")

    url = stack.config.admin_url
    ticker(url, "0.09")
    publish(url, "tranche.signals.inject.nats-2", b'{"side":"buy"}')
    wait_for(position_of(stack, "nats-2"), timeout=60, what="a trade through recreated consumers")
    assert {name: process.pid for name, process in stack.services.items()} == pids
    assert all(process.poll() is None for process in stack.services.values())
    # The replayed history was consumed again and dropped as already handled: one order each.
    orders = get_json(stack.config.url("executor") + "/orders?limit=1000")
    assert sorted(o["bot_id"] for o in orders) == ["nats-1", "nats-2"]
    assert len(stream_messages(url, "TRANCHE_INTENTS", "tranche.intents.nats-1")) == 1
