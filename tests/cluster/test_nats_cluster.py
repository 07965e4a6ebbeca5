"""The cluster ring's own parts, fast: the configuration rendered from the manifests, and the
loopback fallback forming a JetStream cluster with streams at three replicas."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest

from tests.cluster.evidence import _collapsed, capture
from tests.cluster.nats_cluster import MANIFEST, NatsCluster, render
from tranche import credentials
from tranche.nats_cli import provision


def test_the_rendered_config_is_the_manifests_with_addresses_ports_and_store() -> None:
    routes = ["10.1.2.1:6222", "10.1.2.2:6222", "10.1.2.3:6222"]
    text = render(MANIFEST.read_text(), "10.1.2.1", (4222, 6222, 8222), routes, Path("/s"))
    assert "listen: 10.1.2.1:4222" in text
    assert "  listen: 10.1.2.1:6222" in text
    assert all(f"nats-route://{route}" in text for route in routes)
    assert "nats-headless" not in text
    assert "sync_interval: always" in text
    assert "include ./permissions.conf" in text
    default = render(MANIFEST.read_text(), "10.1.2.1", (4222, 6222, 8222), routes, Path("/s"),
                     sync_always=False)  # fmt: skip
    assert "sync_interval" not in default


def test_a_manifest_that_changed_shape_is_refused() -> None:
    changed = MANIFEST.read_text().replace("http_port: 8222", "http: 0.0.0.0:8222")
    with pytest.raises(ValueError, match="expected one line"):
        render(changed, "10.1.2.1", (4222, 6222, 8222), [], Path("/s"))


async def _orders_replicas(cluster: NatsCluster, auth: dict[str, str]) -> int:
    """How many copies of the orders stream the cluster keeps (its leader and its replicas)."""
    nc = await nats.connect(cluster.urls(), **auth)
    try:
        info = await nc.jetstream().stream_info("TRANCHE_ORDERS")
        assert info.cluster is not None
        return 1 + len(info.cluster.replicas or [])
    finally:
        await nc.close()


def test_the_loopback_fallback_forms_a_cluster_with_three_replicas(tmp_path: Path) -> None:
    passwords = credentials.new_passwords()
    cluster = NatsCluster(tmp_path, passwords, isolated=False).start()
    try:
        auth = {"user": "admin", "password": passwords["admin"]}

        async def replicas() -> int:
            await provision(cluster.urls(), auth, replicas=3, wait_s=30)
            return await _orders_replicas(cluster, auth)

        assert asyncio.run(replicas()) == 3
    finally:
        cluster.stop()
    assert all(not node.running for node in cluster.nodes)


def test_provisioning_waits_for_a_cluster_that_has_lost_its_quorum(tmp_path: Path) -> None:
    """The Kubernetes Job and the ring provision a cluster that may have no meta leader yet:
    JetStream's API times out meanwhile. Provisioning asks again until ``wait_s``, so a Job
    started with two of three nodes still down succeeds once they come."""
    passwords = credentials.new_passwords()
    cluster = NatsCluster(tmp_path, passwords, isolated=False).start()
    try:
        auth = {"user": "admin", "password": passwords["admin"]}
        for node in cluster.nodes[1:]:
            cluster.kill(node)

        async def provision_while_the_nodes_return() -> int:
            job = asyncio.create_task(provision(cluster.urls(), auth, replicas=3, wait_s=90))
            await asyncio.sleep(8)  # longer than one JetStream request's 5 s timeout
            assert not job.done(), job  # no quorum: nothing can have been created
            for node in cluster.nodes[1:]:
                await asyncio.to_thread(cluster.start_node, node)
            await job
            return await _orders_replicas(cluster, auth)

        assert asyncio.run(provision_while_the_nodes_return()) == 3
    finally:
        cluster.stop()


def test_a_failed_runs_evidence_has_every_nodes_health_streams_and_log(tmp_path: Path) -> None:
    passwords = credentials.new_passwords()
    cluster = NatsCluster(tmp_path / "nodes", passwords, isolated=False).start()
    try:
        auth = {"user": "admin", "password": passwords["admin"]}
        asyncio.run(provision(cluster.urls(), auth, replicas=3, wait_s=30))
        cluster.kill(cluster.nodes[2])
        summary = capture(cluster, "a test", under=tmp_path / "evidence")
    finally:
        cluster.stop()
    (into,) = (tmp_path / "evidence").iterdir()
    assert {"nats-0-healthz.json", "nats-0-jsz.json", "nats-0.log", "nats-2.log"} <= {
        path.name for path in into.iterdir()
    }
    assert "nats-2-jsz.json" not in {path.name for path in into.iterdir()}  # it was down
    assert f"nats-2 {cluster.nodes[2].address} (down)" in summary
    assert "stream TRANCHE_ORDERS: leader nats-" in summary
    assert "healthz: " in summary
    assert "[DBG]" in (into / "nats-0.log").read_text()  # the nodes log at debug level


def test_a_node_killed_after_the_streams_were_updated_comes_back_current(tmp_path: Path) -> None:
    """The cluster ring's stuck node: every stream's ``max_bytes`` is reserved on every node
    against ``max_file_store``. Once the reservations exceed it, a node that restarts and
    replays a stream update from the meta log refuses it ("insufficient storage resources
    available") and answers /healthz 503 for good. With the manifest's limit it catches up."""
    passwords = credentials.new_passwords()
    cluster = NatsCluster(tmp_path, passwords, isolated=False).start()
    try:
        auth = {"user": "admin", "password": passwords["admin"]}
        for _ in range(2):  # created, then updated: the meta log holds stream updates
            asyncio.run(provision(cluster.urls(), auth, replicas=3, wait_s=30))
        for node in cluster.nodes:
            limits = cluster.monitor(node, "/varz")["jetstream"]
            reserved, most = limits["stats"]["reserved_storage"], limits["config"]["max_storage"]
            assert reserved <= most, f"{node.name}: streams reserve {reserved} of {most} bytes"
        node = cluster.nodes[0]
        cluster.kill(node, hard=True)
        cluster.start_node(node)
        deadline, health = time.monotonic() + 30, {}
        while time.monotonic() < deadline:
            health = cluster.health(node)
            if health.get("status") == "ok":
                break
            time.sleep(0.5)
        assert health.get("status") == "ok", health
    finally:
        cluster.stop()


def test_the_evidence_keeps_a_repeated_log_message_once_with_its_count() -> None:
    lines = [
        "[1] d 10:00 [WRN] Healthcheck failed",
        "[1] d 10:01 [WRN] Healthcheck failed",
        "[1] d 10:02 [INF] Catchup complete",
        "[1] d 10:03 [WRN] Healthcheck failed",
    ]
    assert _collapsed(lines) == [
        "[1] d 10:01 [WRN] Healthcheck failed (x2, the last of them)",
        "[1] d 10:02 [INF] Catchup complete",
        "[1] d 10:03 [WRN] Healthcheck failed",
    ]
