"""A trading workload for the fault ring, and the invariants checked over what it recorded.

The workload runs on its own embedded stack (the services as processes on a real NATS server,
SQLite files in one data directory) whose mock exchange answers with seeded faults and whose
safety and ledger nack every first delivery. The invariants are read from the services' stores
(the record, DESIGN.md promise 2) and from the dead-letter stream.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, text

from tests.e2e.conftest import stream_messages
from tranche.stack import ROOT, EmbeddedStack

LONG = os.environ.get("TRANCHE_FAULTS_LONG") == "1"
BOTS = 40 if LONG else 12
FINAL = ("filled", "cancelled", "expired", "failed")
MAX_TRANCHES = 3
PRODUCT = """[products.ETH-BTC]
base_min_size = "0.001"
base_increment = "0.00000001"
quote_increment = "0.00000001"
quote_min_size = "0.0001"
"""
BOT = """[bots.{name}]
product_id = "ETH-BTC"
quote_size = "0.01"
confirm_evaluations = 1
confirm_seconds = 0
"""
UNLIMITED = str(10**9)
SAFETY_ENV = {
    # Limits that would refuse most of the workload are lifted (the ledger's tranche cap stays),
    # so that the faults meet many orders; redelivery storm on.
    "TRANCHE_MAX_ENTRIES_ALL_HOUR": UNLIMITED,
    "TRANCHE_MAX_ENTRIES_ALL_DAY": UNLIMITED,
    "TRANCHE_LOSING_EXITS_IN_A_ROW": UNLIMITED,
    "TRANCHE_ORDER_FAILURES": UNLIMITED,
    "TRANCHE_FAULT": "nack_first_delivery",
}
MOCK_FAULTS = {
    "TRANCHE_MOCK_SEED": "7",
    "TRANCHE_MOCK_REJECT_RATE": "0.1",
    "TRANCHE_MOCK_RATE_LIMIT_RATE": "0.15",
    "TRANCHE_MOCK_SERVER_ERROR_RATE": "0.15",
    "TRANCHE_MOCK_TIMEOUT_AFTER_PLACE_RATE": "0.1",
    "TRANCHE_MOCK_MARKET_FILL_PARTS": "3",  # partial fills: every market order fills in three
    "TRANCHE_RETRY_BASE_DELAY_S": "0.05",
    "TRANCHE_RETRY_MAX_DELAY_S": "0.5",
    "TRANCHE_POLL_INTERVAL_S": "0.2",
    "TRANCHE_POLL_MAX_INTERVAL_S": "1",
}
LEDGER_ENV = {"TRANCHE_FAULT": "nack_first_delivery"}


def bots_file(path: Path, bots: list[str]) -> Path:
    path.write_text(PRODUCT + "".join(BOT.format(name=name) for name in bots))
    return path


@dataclass
class Record:
    """What the fault session did, for the summary table (tests/faults/conftest.py)."""

    faults: Counter[str] = field(default_factory=Counter)
    totals: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)


RECORD = Record()


_ENGINES: dict[str, Engine] = {}


def query(stack: EmbeddedStack, service: str, sql: str) -> list[tuple]:
    """Rows of ``sql`` in ``service``'s store: its SQLite file, or the PostgreSQL database a
    stack names in ``database_urls`` (the cluster ring)."""
    url = getattr(stack, "database_urls", {}).get(service)
    if url:
        engine = _ENGINES.setdefault(url, create_engine(url))
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql))]
    path = stack.config.data_dir / f"{service}.db"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
        return db.execute(sql).fetchall()


def scalar(stack: EmbeddedStack, service: str, sql: str) -> int:
    return query(stack, service, sql)[0][0] or 0


def column(stack: EmbeddedStack, service: str, sql: str) -> list:
    return [row[0] for row in query(stack, service, sql)]


def snapshot(stack: EmbeddedStack) -> tuple:
    """What moves while the system still works: counts of decisions, orders, fills, open orders
    and unsent outbox rows."""
    orders = "executor_orders_v2"
    return (
        scalar(stack, "safety", "SELECT COUNT(*) FROM safety_decision_log"),
        scalar(stack, "executor", f"SELECT COUNT(*) FROM {orders}"),
        scalar(stack, "executor", f"SELECT COUNT(*) FROM {orders} WHERE status IN {FINAL}"),
        scalar(stack, "ledger", "SELECT COUNT(*) FROM ledger_fills"),
        tuple(
            scalar(stack, name, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
            for name in ("signal", "safety", "executor", "ledger")
        ),
    )


def settle(stack: EmbeddedStack, quiet_s: float = 3.0, timeout: float = 120.0) -> None:
    """Wait until every order is final, every outbox empty, and nothing changed for ``quiet_s``
    (a retry backs off up to a few seconds, so quiet means done, not paused)."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        now = snapshot(stack)
        _, orders, final, _, outboxes = now
        done = orders == final and not any(outboxes)
        if now != last:
            last, since = now, time.monotonic()
        elif done and time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.2)
    raise AssertionError(f"the workload did not settle within {timeout:g} s: {last}")


def wipe_nats(stack: EmbeddedStack) -> None:
    """kill -9 the NATS server, delete its stream data (streams, consumers, buckets) and start
    it empty; the stack provisions the streams again as admin, as an operator would."""
    stack.stop_nats(kill=True)
    shutil.rmtree(stack.config.data_dir / "nats", ignore_errors=True)
    stack.start_nats()


def replay_outboxes(stack: EmbeddedStack, since: datetime) -> int:
    """Refill the streams from the services' outboxes with the operator's command
    (``tranche outbox replay``); the number of messages it published."""
    env = {**os.environ, "TRANCHE_DATA_DIR": str(stack.config.data_dir.resolve()),
           "TRANCHE_NATS_URL": stack.config.admin_url, "TRANCHE_NATS_USER": "admin",
           "TRANCHE_NATS_PASSWORD": stack.config.passwords["admin"]}  # fmt: skip
    env.pop("TRANCHE_DATABASE_URL", None)
    for variable in ("TRANCHE_SIGNING_KEY", "TRANCHE_ORDER_SIGNING_KEY"):
        for given in (variable, f"{variable}_FILE"):
            env.pop(given, None)  # safety's and the executor's rows: the stack's own keys
    replayed = subprocess.run(
        [sys.executable, "-m", "tranche", "outbox", "replay", "--since", since.isoformat()],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    return int(replayed.stdout.strip().splitlines()[-1].split()[0])


def ledger_rebuild_differences(stack: EmbeddedStack, config_file: Path) -> list[dict]:
    env = {
        **os.environ,
        "TRANCHE_DATA_DIR": str(stack.config.data_dir.resolve()),
        "TRANCHE_CONFIG_FILE": str(config_file),
        "TRANCHE_LOG_LEVEL": "warning",
    }
    env.pop("TRANCHE_DATABASE_URL", None)
    ledger_url = getattr(stack, "database_urls", {}).get("ledger")
    if ledger_url:
        env["TRANCHE_DATABASE_URL"] = ledger_url
    found = subprocess.run(
        [sys.executable, "-m", "tranche", "ledger", "rebuild", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert found.returncode in (0, 1), found.stderr
    return json.loads(found.stdout)


def check_invariants(
    stack: EmbeddedStack, config_file: Path, hostile_subjects: dict[str, str]
) -> list[str]:
    """Every promise the fault ring checks, as a list of violations (empty: all kept)."""
    violations = []
    # 1. No duplicate exchange order per intent, and nothing at the exchange we do not know.
    duplicated = "SELECT intent_id FROM executor_orders_v2 GROUP BY intent_id HAVING COUNT(*) > 1"
    for intent in column(stack, "executor", duplicated):
        violations.append(f"intent {intent} has more than one order")
    known = set(
        column(stack, "executor", "SELECT exchange_client_order_id FROM executor_orders_v2")
    )
    for client_id in column(
        stack, "executor", "SELECT client_order_id FROM mock_exchange_orders_v2"
    ):
        if client_id not in known:
            violations.append(f"exchange order {client_id} belongs to no recorded intent")
    # 2. Every approved intent ends in a final order state.
    orders = dict(
        query(stack, "executor", "SELECT client_order_id, status FROM executor_orders_v2")
    )
    approved = query(
        stack, "safety", "SELECT intent_id, client_order_id FROM safety_decision_log WHERE approved"
    )
    for intent, client_id in approved:
        if orders.get(client_id) not in FINAL:
            violations.append(f"approved intent {intent}: order {orders.get(client_id)}")
    # 3. Every fill booked exactly once: the ledger's fills are the executor's, one row each.
    # A fill is known by its key: the exchange's entry id where it gives one, else the trade id
    # (the executor keeps the two kinds in two tables).
    executor_fills = set(
        column(
            stack,
            "executor",
            "SELECT trade_id FROM executor_fills_v1 "
            "UNION ALL SELECT entry_id FROM executor_fill_entries_v1",
        )
    )
    ledger_fills = column(stack, "ledger", "SELECT fill_key FROM ledger_fills")
    if len(ledger_fills) != len(set(ledger_fills)) or set(ledger_fills) != executor_fills:
        violations.append(
            f"fills: ledger {len(ledger_fills)} ({len(set(ledger_fills))} distinct), "
            f"executor {len(executor_fills)}, differing {set(ledger_fills) ^ executor_fills}"
        )
    # 4. Positions equal a rebuild from the fills.
    for difference in ledger_rebuild_differences(stack, config_file):
        violations.append(f"rebuild differs: {difference}")
    # 5. No limit exceeded: at most three entry tranches, no breach flagged.
    for bot, payload in query(stack, "ledger", "SELECT bot_id, payload FROM ledger_positions"):
        position = json.loads(payload)
        if position.get("tranche_breach") or len(position["tranches"]) > MAX_TRANCHES:
            violations.append(f"{bot}: {len(position['tranches'])} tranches")
    # 6. Every hostile payload on its service's dead-letter subject with a reason; no crash.
    for subject, service in hostile_subjects.items():
        letters = [json.loads(m.data) for m in stream_messages(
            stack.config.admin_url, "TRANCHE_DLQ", f"tranche.dlq.{service}")]  # fmt: skip
        if not any(letter["subject"] == subject and letter["reasons"] for letter in letters):
            violations.append(f"hostile payload on {subject} is not on tranche.dlq.{service}")
    for name, process in stack.services.items():
        if process.poll() is not None:
            violations.append(f"{name} exited with {process.returncode}")
    return violations
