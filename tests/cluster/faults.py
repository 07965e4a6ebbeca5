"""The faults of the cluster ring, each a function of the running stack, and what is measured
around them: the time from a fault to the next booked fill, and each intent's latency."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import nats

from shared.streams import ALL_STREAMS, ORDERS, stream_for
from tests.cluster.conftest import ClusterStack
from tests.cluster.nats_cluster import Node
from tests.faults.workload import query, scalar

PARTITION_S = float(os.environ.get("TRANCHE_CLUSTER_PARTITION_S", "30"))
PAUSE_S = 3.0  # a crashed node stays down this long before it is started again


def leader_of(stack: ClusterStack, stream: str) -> Node:
    async def ask() -> str:
        nc = await nats.connect(stack.config.admin_url)
        try:
            info = await nc.jetstream().stream_info(stream)
            assert info.cluster is not None and info.cluster.leader, f"{stream} has no leader"
            return info.cluster.leader
        finally:
            await nc.close()

    return stack.cluster.by_name(asyncio.run(ask()))


def busiest_stream(stack: ClusterStack) -> str:
    """The orders stream carries approvals, rejections and every order event: the most."""
    return ORDERS.name


def wait_current(stack: ClusterStack, node: Node, timeout: float = 90.0) -> float:
    """Until every running node answers ``/healthz`` ok: JetStream enabled, the meta group,
    every stream and consumer current (the server's own check that a node has caught up, and
    the manifests' startup probe); the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    answers: dict[str, dict] = {}
    while time.monotonic() < deadline:
        answers = {
            each.name: stack.cluster.health(each)
            for each in stack.cluster.nodes
            if each.running and not each.cut_off
        }
        if all(answer.get("status") == "ok" for answer in answers.values()):
            return time.monotonic() - started
        time.sleep(0.5)
    not_current = {
        name: [error.get("error") for error in answer.get("errors") or []] or answer
        for name, answer in answers.items()
        if answer.get("status") != "ok"
    }
    raise AssertionError(
        f"{node.name}: the cluster was not healthy in {timeout:g} s: {not_current}"
    )


def leaders(stack: ClusterStack) -> dict[str, str | None]:
    """Each stream's leader (None: none elected), for a failure's message."""

    async def ask() -> dict[str, str | None]:
        nc = await nats.connect(stack.config.admin_url)
        found: dict[str, str | None] = {}
        try:
            for stream in ALL_STREAMS:
                try:
                    cluster = (
                        await nc.jetstream().stream_info(
                            stream.name,
                        )
                    ).cluster
                    found[stream.name] = cluster.leader if cluster else None
                except Exception as error:
                    found[stream.name] = f"{type(error).__name__}"
        finally:
            await nc.close()
        return found

    return asyncio.run(ask())


Recover = Callable[[], float]
"""A fault's second half: heals it and answers the seconds until every node was current."""


def restart(stack: ClusterStack, node: Node) -> float:
    stack.cluster.start_node(node)
    return wait_current(stack, node)


def _restarted_later(stack: ClusterStack, node: Node) -> Recover:
    def recover() -> float:
        time.sleep(PAUSE_S)
        return restart(stack, node)

    return recover


def kill_stream_leader(stack: ClusterStack) -> Recover:
    """kill -9 of the busiest stream's leader; the returned step restarts it."""
    node = leader_of(stack, busiest_stream(stack))
    stack.cluster.kill(node, hard=True)
    return _restarted_later(stack, node)


def kill_meta_leader(stack: ClusterStack) -> Recover:
    node = stack.cluster.meta_leader()
    assert node is not None, "no meta leader"
    stack.cluster.kill(node, hard=True)
    return _restarted_later(stack, node)


def isolate_one(stack: ClusterStack) -> Recover:
    """A node cut off (link down) for :data:`PARTITION_S`, a node no service is connected to
    if there is one (the next fault is the other kind)."""
    nodes = stack.cluster.nodes
    quiet = [n for n in nodes if not any(c.startswith("tranche-") for c in clients(stack, n))]
    node = (quiet or nodes)[-1]
    return _partition(stack, node)


def isolate_a_service_node(stack: ClusterStack) -> Recover:
    """The node the executor's connection is on, cut off for :data:`PARTITION_S`."""
    for node in stack.cluster.nodes:
        if "tranche-executor" in clients(stack, node):
            return _partition(stack, node)
    raise AssertionError("the executor is connected to no node")


def _partition(stack: ClusterStack, node: Node) -> Recover:
    stack.cluster.cut_off(node)
    started = time.monotonic()

    def heal() -> float:
        time.sleep(max(0.0, PARTITION_S - (time.monotonic() - started)))
        stack.cluster.heal(node)
        return wait_current(stack, node)

    return heal


def rolling_restart(stack: ClusterStack) -> Recover:
    """Each node stopped cleanly, started and caught up, one after the other."""
    slowest = 0.0
    for node in stack.cluster.nodes:
        stack.cluster.kill(node, hard=False)
        slowest = max(slowest, restart(stack, node))
    return lambda: slowest


def rejoin_wiped(stack: ClusterStack) -> Recover:
    """A node killed, its storage deleted, started empty: it must catch up from its peers."""
    node = next(n for n in stack.cluster.nodes if n != stack.cluster.meta_leader())
    stack.cluster.kill(node, hard=True)
    stack.cluster.wipe(node)
    return _restarted_later(stack, node)


def clients(stack: ClusterStack, node: Node) -> list[str]:
    try:
        return stack.cluster.clients_of(node)
    except OSError:
        return []


FAULTS: dict[str, Callable[[ClusterStack], Recover]] = {
    "kill -9 of the orders stream's leader": kill_stream_leader,
    "loss of the meta leader (kill -9)": kill_meta_leader,
    "one node cut off, then healed": isolate_one,
    "the executor's node cut off, then healed": isolate_a_service_node,
    "rolling restart of all three nodes": rolling_restart,
    "a node rejoining with its storage wiped": rejoin_wiped,
}
PARTITIONS = ("one node cut off, then healed", "the executor's node cut off, then healed")
REPORT: list[str] = []
"""One line per fault (recovery, catch-up, latencies), for the run's summary (conftest.py)."""


def inject_acknowledged(stack: ClusterStack, bots: list[str], side: str, round_id: str) -> Counter:
    """One signal per bot, each published to JetStream and retried until the cluster
    acknowledges it (a core publish during a leader election is dropped without a word); the
    refusals seen on the way, by reason."""
    refusals: Counter[str] = Counter()

    async def send() -> None:
        nc = await nats.connect(stack.config.admin_url, max_reconnect_attempts=-1)
        js = nc.jetstream()
        try:
            for bot in bots:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        await js.publish(
                            f"tranche.signals.inject.{bot}", f'{{"side":"{side}"}}'.encode(),
                            stream="TRANCHE_SIGNALS", timeout=2,
                            headers={"Nats-Msg-Id": f"cluster-{round_id}-{bot}"},
                        )  # fmt: skip
                        break
                    except Exception as error:
                        refusals[f"{type(error).__name__}: {error}"[:120]] += 1
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.5)
        finally:
            await nc.close()

    asyncio.run(send())
    return refusals


@dataclass
class Measures:
    recovery_s: dict[str, float] = field(default_factory=dict)
    windows: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)
    totals: Counter[str] = field(default_factory=Counter)


def fills(stack: ClusterStack) -> int:
    return scalar(stack, "ledger", "SELECT COUNT(*) FROM ledger_fills")


def seconds_to_next_fill(
    stack: ClusterStack,
    before: int,
    since: float,
    what: str,
    tick: Callable[[], None],
    timeout: float = 120.0,
) -> float:
    """From ``since`` (monotonic) until the ledger has booked more than ``before`` fills. The
    price is published again every 2 s meanwhile, as a live feed would: a ticker is core NATS,
    and one sent to a node that is cut off before its clients noticed is lost."""
    deadline, next_tick = since + timeout, time.monotonic() + 2
    while time.monotonic() < deadline:
        if fills(stack) > before:
            return time.monotonic() - since
        if time.monotonic() >= next_tick:
            tick()
            next_tick = time.monotonic() + 2
        time.sleep(0.05)
    raise AssertionError(
        f"no fill booked within {timeout:g} s of the fault: {what}; stream leaders "
        f"{leaders(stack)}; nodes running {[n.name for n in stack.cluster.nodes if n.running]}"
    )


def intent_latencies(stack: ClusterStack, start: datetime, end: datetime) -> list[float]:
    """Seconds from an intent staged (signal's outbox) to its first position change (ledger's
    outbox), for intents staged in [start, end)."""
    staged = {
        json.loads(payload)["correlation_id"]: _at(created)
        for payload, created in query(
            stack,
            "signal",
            "SELECT payload, created_at FROM outbox WHERE subject LIKE 'tranche.intents.%'",
        )
    }
    booked: dict[str, datetime] = {}
    for payload, created in query(
        stack, "ledger",
        "SELECT payload, created_at FROM outbox WHERE subject LIKE 'tranche.ledger.positions.%'",
    ):  # fmt: skip
        correlation = json.loads(payload).get("correlation_id")
        at = _at(created)
        if correlation in staged and (correlation not in booked or at < booked[correlation]):
            booked[correlation] = at
    return sorted(
        (booked[i] - staged[i]).total_seconds() for i in booked if start <= staged[i] < end
    )


def _at(value: str | datetime) -> datetime:
    found = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return found.astimezone(UTC).replace(tzinfo=None) if found.tzinfo else found


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def acknowledged_but_missing(stack: ClusterStack) -> tuple[int, list[str]]:
    """Jepsen's check: every outbox row the server acknowledged (``published_at`` set) is still
    in its stream, counted by message id. Returns (rows checked, ids missing)."""
    acknowledged: dict[str, set[str]] = {}
    for service in ("signal", "safety", "executor", "ledger"):
        for message_id, subject in query(
            stack, service,
            "SELECT message_id, subject FROM outbox "
            "WHERE published_at IS NOT NULL AND kv_bucket IS NULL",
        ):  # fmt: skip
            acknowledged.setdefault(stream_for(subject).name, set()).add(message_id)

    async def stored(stream: str) -> set[str]:
        nc = await nats.connect(stack.config.admin_url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            ids = set()
            for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
                try:
                    message = await js.get_msg(stream, seq)
                except nats.js.errors.NotFoundError:
                    continue
                ids.add((message.headers or {}).get("Nats-Msg-Id", ""))
            return ids
        finally:
            await nc.close()

    missing = []
    for stream, ids in acknowledged.items():
        missing += sorted(ids - asyncio.run(stored(stream)))
    return sum(len(ids) for ids in acknowledged.values()), missing


def refused_publishes(stack: ClusterStack, node: Node, attempts: int) -> Counter:
    """Publish ``attempts`` signals through ``node`` and count the refusals by reason (an
    acknowledged one is not counted)."""
    refusals: Counter[str] = Counter()

    async def send() -> None:
        nc = await nats.connect(node.url, **stack.config.auth("admin"))
        js = nc.jetstream()
        try:
            for n in range(attempts):
                try:
                    await js.publish("tranche.signals.inject.wl-0", b'{"side":"buy"}',
                                     stream="TRANCHE_SIGNALS", timeout=2,
                                     headers={"Nats-Msg-Id": f"no-quorum-{n}"})  # fmt: skip
                except Exception as error:
                    refusals[f"{type(error).__name__}: {error}"[:120]] += 1
        finally:
            await nc.close()

    asyncio.run(send())
    return refusals


def services_not_ready(stack: ClusterStack) -> dict[str, object] | None:
    """Each service's failing readiness checks, once every one of them has some."""
    failing = {}
    for name in stack.config.services:
        try:
            answer = httpx.get(stack.config.url(name) + "/ready", timeout=3)
        except httpx.HTTPError as error:
            failing[name] = str(error)
            continue
        if answer.status_code == 200:
            return None
        checks = answer.json()["checks"]
        failing[name] = {check: result for check, result in checks.items() if result != "ok"}
    return failing
