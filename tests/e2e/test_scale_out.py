"""Scale-out: two instances of every service on one NATS server (with the deployments' users and
permissions) and one PostgreSQL database per service, trading 40 bots at once: market entries,
exits, and resting limit orders filled in parts.

Every intent is decided once, every approval is one order on the mock exchange (by client order
id), every fill is booked once, and the all-bots entry limit holds between the two safety
instances. Both instances of each service take part (they share durable consumers as work
queues), no order is placed or synced by both executors, and a resting order is matched once per
price although both executors hear every price.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from shared.contracts import Reason, TradeIntent
from tests.e2e.conftest import HERE, get_json, publish, stack_config, stream_messages, wait_for
from tests.support.nats_server import free_port
from tests.support.postgres import fresh_database
from tranche.stack import ROOT, EmbeddedStack, StackConfig, _stop

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.serial]

SERVICES = ("ledger", "executor", "safety", "signal")  # consumers first, as the stack starts them
BOTS = [f"scale-{n:02d}" for n in range(40)]
ENTRY_LIMIT = 30  # all bots together, per hour: 10 of the 40 entries must be refused
FINAL = {"filled", "cancelled", "expired", "failed"}
LIMIT_SIZE = Decimal("0.01")  # filled in four parts at a partial fill ratio of 0.5


def bots_file(folder: Path) -> Path:
    """The e2e products, and 40 bots that trade exactly what is injected."""
    products = (HERE / "bots.toml").read_text().split("[bots.", 1)[0]
    bots = "".join(
        f'[bots.{bot}]\nproduct_id = "ETH-BTC"\nquote_size = "0.01"\n'
        "confirm_evaluations = 1\nconfirm_seconds = 0\n\n"
        for bot in BOTS
    )
    path = folder / "bots.toml"
    path.write_text(products + bots)
    return path


class Instances:
    """``python -m services.<name>`` twice per service, as the stack would start one."""

    def __init__(self, stack: EmbeddedStack, databases: dict[str, str]):
        self.stack, self.databases = stack, databases
        self.processes: dict[str, subprocess.Popen] = {}
        self.urls: dict[str, str] = {}

    def start(self, name: str, instance: int) -> None:
        key = f"{name}-{instance}"
        port = free_port()
        env = self.stack.service_env(name) | {
            "TRANCHE_HTTP_PORT": str(port),
            "TRANCHE_DATABASE_URL": self.databases[name],
        }
        log = open(self.stack.logs / f"{key}.log", "ab")  # noqa: SIM115 - the child owns it
        self.processes[key] = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], cwd=ROOT, env=env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.urls[key] = f"http://127.0.0.1:{port}"

    def wait_ready(self) -> None:
        for key, url in self.urls.items():

            def ready(key: str = key, url: str = url) -> bool:
                assert self.processes[key].poll() is None, self.log(key)[-2000:]
                try:
                    return httpx.get(url + "/ready", timeout=1).status_code == 200
                except Exception:
                    return False

            wait_for(ready, timeout=60, what=f"{key} ready")

    def url(self, name: str) -> str:
        return self.urls[f"{name}-1"]

    def log(self, key: str) -> str:
        return (self.stack.logs / f"{key}.log").read_text(errors="replace")

    def events(self, key: str, event: str) -> list[dict]:
        found = []
        for line in self.log(key).splitlines():
            if f'"{event}"' in line:
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def stop(self) -> None:
        for key in reversed(list(self.processes)):
            _stop(self.processes[key])


def rows(url: str, query: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(query))]
    finally:
        engine.dispose()


def tick(config: StackConfig, price: str, at: datetime) -> None:
    body = f'{{"product_id":"ETH-BTC","price":"{price}","time":"{at.isoformat()}"}}'
    publish(config.admin_url, "tranche.market.ticker.ETH-BTC", body.encode())
    time.sleep(0.5)  # core NATS: every instance must have the price before the signals


def inject(config: StackConfig, side: str, round_: str) -> None:
    operator = config.nats_url_as("operator")
    for n, bot in enumerate(BOTS):
        body = json.dumps({"side": side, "confirmed": True, "message_id": f"{round_}-{bot}"})
        publish(operator, f"tranche.signals.inject.{bot}", body.encode())
        if n % 2 == 0:  # the same signal again (a re-sent message): must change nothing
            publish(operator, f"tranche.signals.inject.{bot}", body.encode())


def limit_entry(config: StackConfig, bot: str, at: datetime, round_: str = "limit") -> None:
    """A resting limit buy below the market, as a trade intent (the signal service makes market
    orders only), straight onto the intents subject as admin."""
    intent_id = f"{round_}-{bot}"
    intent = TradeIntent(
        message_id=intent_id, correlation_id=intent_id, time=at, intent_id=intent_id,
        signal_id=intent_id, bot_id=bot, product_id="ETH-BTC", action="entry", side="buy",
        temperature=Decimal(80), band="hot", reason=Reason(code="SIGNAL", message="scale-out"),
        reference_price=Decimal("0.09"), market_time=at, order_type="limit",
        limit_price=Decimal("0.085"), base_size=LIMIT_SIZE,
    )  # fmt: skip
    publish(config.admin_url, f"tranche.intents.{bot}", intent.model_dump_json().encode())


def crossing_prices(config: StackConfig, after: datetime) -> None:
    """Six prices below the limit: four fill each resting order, the last two change nothing."""
    for second in range(1, 7):
        tick(config, "0.08", after + timedelta(seconds=second))


def test_two_of_every_service_trade_40_bots_once_each(tmp_path: Path) -> None:
    with ExitStack() as cleanup:
        databases = {name: cleanup.enter_context(fresh_database()) for name in SERVICES}
        config = stack_config(
            tmp_path,
            SERVICES,
            config_file=bots_file(tmp_path),
            extra_env={
                "TRANCHE_OUTBOX_POLL_S": "0.5",
                "TRANCHE_MAX_ENTRIES_ALL_HOUR": str(ENTRY_LIMIT),
                "TRANCHE_MOCK_PARTIAL_FILL_RATIO": "0.5",
                "TRANCHE_LOG_LEVEL": "info",
            },
        )
        stack = EmbeddedStack(config)
        stack.start_nats()  # secure: the services' users, streams provisioned as admin
        cleanup.callback(stack.stop_nats)
        instances = Instances(stack, databases)
        cleanup.callback(instances.stop)
        for name in SERVICES:
            for instance in (1, 2):
                instances.start(name, instance)
        instances.wait_ready()
        started = time.monotonic()

        # Round 1: every bot asks to enter; the all-bots limit lets 30 through.
        now = datetime.now(UTC).replace(microsecond=0)
        tick(config, "0.09", now)
        inject(config, "buy", "entry")

        def decided(count: int):
            def probe() -> list[dict] | None:
                found = get_json(instances.url("safety") + "/decisions?limit=1000") or []
                return found if len(found) >= count else None

            return probe

        def settled() -> list[dict] | None:
            """Every approval so far has its order, and every order is final."""
            found = get_json(instances.url("safety") + "/decisions?limit=1000") or []
            approved = {d["client_order_id"] for d in found if d["approved"]}
            orders = get_json(instances.url("executor") + "/orders?limit=1000") or []
            recorded = {o["client_order_id"] for o in orders}
            done = all(o["status"] in FINAL for o in orders)
            return orders if approved <= recorded and done else None

        entries = wait_for(decided(len(BOTS)), timeout=180, what="a decision for every bot")
        wait_for(settled, timeout=120, what="every entry order final")
        entry_seconds = time.monotonic() - started

        # Round 2: every bot asks to exit; the 30 holders sell, the 10 others have nothing to
        # sell (the signal service makes no intent for them).
        tick(config, "0.095", now + timedelta(minutes=5))
        inject(config, "sell", "exit")
        expected = len(BOTS) + ENTRY_LIMIT
        wait_for(decided(expected), timeout=180, what="exits decided")
        wait_for(settled, timeout=120, what="every exit order final")

        # Round 3: resting limit orders, filled half at a time by later prices, so the executors
        # poll them repeatedly and both hear every price that matches them.
        later = now + timedelta(hours=3)  # past the hourly entry limit's window
        tick(config, "0.09", later)
        resting = sorted({d["bot_id"] for d in entries if not d["approved"]})
        for bot in resting:
            limit_entry(config, bot, later)
        expected += len(resting)
        wait_for(decided(expected), timeout=180, what="limit entries decided")
        crossing_prices(config, later)
        wait_for(settled, timeout=120, what="every limit order filled")

        # Round 4: the same again, but the executor holding most of the resting orders is
        # killed (kill -9) before any price crosses: the other one takes them over.
        later += timedelta(hours=1)
        tick(config, "0.09", later)
        for bot in resting:
            limit_entry(config, bot, later, "again")
        expected += len(resting)
        wait_for(decided(expected), timeout=180, what="the second limit entries decided")

        def resting_orders() -> list[dict] | None:
            found = get_json(instances.url("safety") + "/decisions?limit=1000") or []
            wanted = {d["client_order_id"] for d in found if d["intent_id"].startswith("again-")}
            orders = get_json(instances.url("executor") + "/orders?limit=1000") or []
            mine = [o for o in orders if o["client_order_id"] in wanted]
            return (
                mine
                if len(mine) == len(wanted) and all(o["status"] == "open" for o in mine)
                else None
            )

        second = {o["client_order_id"] for o in wait_for(resting_orders, what="orders resting")}
        placed_by = {
            n: {e["client_order_id"] for e in instances.events(f"executor-{n}", "order.placed")}
            & second
            for n in (1, 2)
        }
        victim = max((1, 2), key=lambda n: len(placed_by[n]))
        survivor = 3 - victim
        instances.processes[f"executor-{victim}"].kill()
        instances.processes[f"executor-{victim}"].wait(10)
        orphaned = placed_by[victim]

        def taken_over() -> bool:
            events = instances.events(f"executor-{survivor}", "order.taking_over")
            return orphaned <= {e["client_order_id"] for e in events}

        wait_for(taken_over, timeout=60, what="the survivor taking the orders over")
        survivor_url = instances.urls[f"executor-{survivor}"]
        crossing_prices(config, later)

        def all_filled() -> list[dict] | None:
            orders = get_json(survivor_url + "/orders?limit=1000") or []
            mine = [o for o in orders if o["client_order_id"] in second]
            return mine if all(o["status"] == "filled" for o in mine) else None

        wait_for(all_filled, timeout=120, what="the orders of the killed executor filled")
        instances.urls[f"executor-{victim}"] = survivor_url  # the HTTP API of the one left
        time.sleep(2)  # a late duplicate, if there were one, would show itself now
        decisions = get_json(instances.url("safety") + "/decisions?limit=1000")
        orders = get_json(instances.url("executor") + "/orders?limit=1000")
        total_seconds = time.monotonic() - started

        # Every intent decided once, and one intent per bot and round.
        intents = stream_messages(config.admin_url, "TRANCHE_INTENTS", None)
        assert len(decisions) == expected == len({d["intent_id"] for d in decisions})
        assert {d["intent_id"] for d in decisions} == {
            json.loads(m.data)["intent_id"] for m in intents
        }
        assert len(intents) == expected  # the re-sent signals made no second intent
        # No limit exceeded between the two safety instances.
        approved_entries = [d for d in entries if d["action"] == "entry" and d["approved"]]
        assert len(approved_entries) == ENTRY_LIMIT
        refused = [d for d in entries if not d["approved"]]
        assert all("ALL_ENTRIES_PER_HOUR" in {r["code"] for r in d["reasons"]} for d in refused), (
            refused
        )
        exits = [d for d in decisions if d["action"] == "exit"]
        holders = {d["bot_id"] for d in approved_entries}
        assert {d["bot_id"] for d in exits if d["approved"]} == holders

        # Every approval is one order, filled, and one order on the mock exchange.
        approved = {d["client_order_id"] for d in decisions if d["approved"]}
        assert len(approved) == 2 * ENTRY_LIMIT + 2 * len(resting)
        assert sorted(o["client_order_id"] for o in orders) == sorted(approved)
        assert all(o["status"] == "filled" for o in orders), orders
        # Each resting order: matched once per price however many executors heard it.
        limits = [o for o in orders if o["order_type"] == "limit"]
        assert len(limits) == 2 * len(resting)
        for order in limits:
            fills = get_json(instances.url("executor") + f"/orders/{order['client_order_id']}")
            times = [fill["time"] for fill in fills["fills"]]
            assert len(times) == 4 == len(set(times)), fills  # 0.005, 0.0025, 0.00125, 0.00125
            view = get_json(instances.url("ledger") + f"/positions/{order['bot_id']}")
            assert Decimal(view["position"]["quantity"]) == 2 * LIMIT_SIZE, view
        exchange = rows(
            databases["executor"], "SELECT client_order_id FROM mock_exchange_orders_v2"
        )
        assert sorted(c.removeprefix("tranche-") for (c,) in exchange) == sorted(approved)

        # Every fill booked once, and every holder is flat again.
        made = rows(databases["executor"], "SELECT trade_id FROM mock_exchange_fills_v1")
        booked = rows(databases["ledger"], "SELECT trade_id FROM ledger_fills")
        assert len(booked) == len(set(booked)) and set(booked) == set(made)
        for bot in holders:
            view = get_json(instances.url("ledger") + f"/positions/{bot}")
            position = view["position"]
            assert position["status"] == "flat" and Decimal(position["quantity"]) == 0, view

        # Both instances of each service did part of the work; no order had two executors.
        for name, event in (("safety", "intent.approved"), ("executor", "order.placed"),
                            ("ledger", "fills.booked"), ("signal", "intent.created")):  # fmt: skip
            share = [len(instances.events(f"{name}-{n}", event)) for n in (1, 2)]
            print(f"{name}: {event} per instance {share}")
            assert all(share), f"{name}: one instance did nothing ({share})"
        placed = Counter(
            e["client_order_id"]
            for n in (1, 2)
            for e in instances.events(f"executor-{n}", "order.placed")
        )
        assert set(placed.values()) == {1} and set(placed) == approved
        for n in (1, 2):
            changes = instances.events(f"executor-{n}", "order.changed")
            changed = {e["client_order_id"] for e in changes}
            other = {
                e["client_order_id"] for e in instances.events(f"executor-{3 - n}", "order.placed")
            }
            shared = changed & other - orphaned  # the killed one's orders: taken over, once
            assert not shared, f"an executor synced orders the other one held: {shared}"
        for key in instances.processes:
            assert "permissions violation" not in instances.log(key).lower(), key
        print(
            f"\n{len(BOTS)} bots, two of every service: 40 entries decided and 30 filled in "
            f"{entry_seconds:.1f} s; all four rounds, {len(approved)} orders, "
            f"in {total_seconds:.1f} s"
        )
