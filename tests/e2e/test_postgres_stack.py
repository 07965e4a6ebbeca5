"""The same services on PostgreSQL: a signal trades to a position, and a restart keeps it."""

from __future__ import annotations

import time
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e.conftest import get_json, position_of, publish, stack_config, wait_for
from tests.support.postgres import fresh_database
from tranche.stack import SERVICES, EmbeddedStack

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def test_the_stack_trades_on_postgresql(tmp_path: Path) -> None:
    with ExitStack() as databases:
        urls = {name: databases.enter_context(fresh_database()) for name in SERVICES}
        config = stack_config(
            tmp_path,
            SERVICES,
            service_env={name: {"TRANCHE_DATABASE_URL": url} for name, url in urls.items()},
        )
        stack = EmbeddedStack(config)
        stack.start()
        try:
            price = b'{"product_id":"ETH-BTC","price":"0.0891","time":"2018-01-20T12:00:00Z"}'
            publish(config.admin_url, "tranche.market.ticker.ETH-BTC", price)
            time.sleep(0.3)  # core NATS: let the services see the price before the signal
            publish(config.admin_url, "tranche.signals.inject.flow-bare", b'{"side":"buy"}')
            position = wait_for(position_of(stack, "flow-bare"), what="a position on PostgreSQL")
            assert Decimal(position["average_entry_price"]) == Decimal("0.0891")
            # State lives in PostgreSQL, not in the process: a restarted ledger still knows it.
            stack.restart_service("ledger")
            again = get_json(config.url("ledger") + "/positions/flow-bare")
            assert again["position"] == position
            assert not (tmp_path / "ledger.db").exists()
        finally:
            stack.stop()
