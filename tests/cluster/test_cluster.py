"""The cluster, proven: the fault ring's many-bot workload trading through a three-node NATS
JetStream cluster (streams at three replicas) while nodes are killed, cut off, restarted one by
one and wiped; then every invariant of the fault ring from the stores, and Jepsen's: every
publish the cluster acknowledged is still in its stream.

``make test-cluster`` runs it; ``TRANCHE_CLUSTER_PARTITION_S`` shortens the partitions (30 s)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from tests.cluster.conftest import ClusterStack
from tests.cluster.faults import (
    FAULTS,
    PARTITIONS,
    REPORT,
    acknowledged_but_missing,
    fills,
    inject_acknowledged,
    intent_latencies,
    percentile,
    refused_publishes,
    seconds_to_next_fill,
    services_not_ready,
    wait_current,
)
from tests.e2e.conftest import publish, wait_for
from tests.faults.test_workload import HOSTILE, NAMES, Market
from tests.faults.workload import RECORD, check_invariants, settle

# Six faults with two 30 s partitions: about three minutes on an idle machine, so more than the
# suite's 300 s per test is allowed for a loaded one.
pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(900)]


def test_the_workload_keeps_every_promise_through_cluster_faults(
    running_cluster: ClusterStack,
) -> None:
    stack = running_cluster
    REPORT.append(f"sync_interval {'always' if stack.cluster.sync_always else 'server default'}")
    market = Market()
    market.tick(stack)
    inject_acknowledged(stack, NAMES, "buy", "first")
    settle(stack)
    for n, (name, fault) in enumerate(FAULTS.items()):
        if name in PARTITIONS and not stack.cluster.isolated:
            continue
        side = "sell" if n % 2 == 0 else "buy"
        market.tick(stack)
        before, window_start = fills(stack), datetime.now(UTC)
        started = time.monotonic()
        recover = fault(stack)
        RECORD.faults[name] += 1
        refusals = inject_acknowledged(stack, NAMES, side, f"{n}")
        for reason, count in refusals.items():
            RECORD.totals[f"publish refused: {reason}"] += count
        recovery = seconds_to_next_fill(
            stack, before, started, name, lambda: market.tick(stack, advance=False)
        )
        caught_up = recover()
        settle(stack, timeout=180)
        latencies = intent_latencies(stack, window_start.replace(tzinfo=None),
                                     datetime.now(UTC).replace(tzinfo=None))  # fmt: skip
        REPORT.append(
            f"{name:<42} next fill {recovery:6.2f} s  all current {caught_up:5.1f} s  "
            f"intent→position p50 {percentile(latencies, 50):5.2f} s  "
            f"p99 {percentile(latencies, 99):5.2f} s  ({len(latencies)} intents)"
        )
    for subject, (body, _service) in HOSTILE.items():
        publish(stack.config.admin_url, subject, body)
        RECORD.faults["hostile payload"] += 1
    market.tick(stack)
    inject_acknowledged(stack, NAMES, "buy", "last")
    settle(stack)

    checked, missing = acknowledged_but_missing(stack)
    RECORD.totals["acknowledged publishes checked in their streams"] += checked
    RECORD.totals["fills booked"] += fills(stack)
    dlq = {subject: service for subject, (_body, service) in HOSTILE.items()}
    violations = check_invariants(stack, stack.config.config_file, dlq)  # type: ignore[arg-type]
    violations += [f"acknowledged publish {id_} is not in its stream" for id_ in missing]
    RECORD.violations.extend(violations)
    assert RECORD.totals["fills booked"] > 0
    assert checked > 0
    assert violations == []


def test_with_the_quorum_lost_publishes_are_refused_and_nothing_acknowledged_is_lost(
    running_cluster: ClusterStack,
) -> None:
    """Two of three nodes down: a client sees its publishes refused (with the reason), the
    services report not ready; both nodes back, everything acknowledged is still there."""
    stack = running_cluster
    survivor, *lost = stack.cluster.nodes
    for node in lost:
        stack.cluster.kill(node, hard=True)
    RECORD.faults["quorum lost (two of three nodes kill -9)"] += 1
    seen = refused_publishes(stack, survivor, attempts=5)
    assert sum(seen.values()) == 5, f"a publish was acknowledged without a quorum: {seen}"
    for reason, count in seen.items():
        RECORD.totals[f"quorum lost, publish refused: {reason}"] += count
    print(f"\nquorum lost, a client sees: {dict(seen)}")
    not_ready = wait_for(lambda: services_not_ready(stack), timeout=30,
                         what="the services to report not ready")  # fmt: skip
    print(f"quorum lost, /ready: {not_ready}")
    for node in lost:
        stack.cluster.start_node(node)
    wait_current(stack, lost[0])
    market = Market()
    market.at = datetime(2018, 3, 1, tzinfo=UTC)
    market.tick(stack)
    inject_acknowledged(stack, NAMES, "sell", "after-quorum")
    settle(stack)
    checked, missing = acknowledged_but_missing(stack)
    assert checked > 0
    assert missing == []
    violations = check_invariants(stack, stack.config.config_file, {})  # type: ignore[arg-type]
    RECORD.violations.extend(violations)
    assert violations == []
