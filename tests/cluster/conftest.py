"""The cluster ring: the four services against a three-node NATS JetStream cluster
(tests/cluster/nats_cluster.py), streams at three replicas, every service given all three URLs,
each on a PostgreSQL database of its own."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field

import pytest
from pluggy import Result

from tests.cluster.evidence import capture
from tests.cluster.nats_cluster import NatsCluster
from tests.faults.conftest import pytest_terminal_summary as fault_summary
from tests.faults.workload import LEDGER_ENV, MOCK_FAULTS, SAFETY_ENV, bots_file
from tests.support.nats_server import free_port
from tranche import credentials
from tranche.nats_cli import provision
from tranche.stack import EmbeddedStack, StackConfig

REPLICAS = 3


@dataclass
class ClusterConfig(StackConfig):
    cluster: NatsCluster | None = field(default=None, repr=False)

    @property
    def nats_url(self) -> str:
        """One node that runs and is not cut off (tests publish through it); the services get
        all three (:meth:`ClusterStack.service_env`)."""
        assert self.cluster is not None
        for node in self.cluster.nodes:
            if node.running and not node.cut_off:
                return node.url
        raise RuntimeError("no NATS node is reachable")


class ClusterStack(EmbeddedStack):
    config: ClusterConfig
    database_urls: dict[str, str] = {}  # noqa: RUF012 - set per instance by the fixture
    """Each service's PostgreSQL database (tests/faults/workload.py reads the stores there)."""

    @property
    def cluster(self) -> NatsCluster:
        assert self.config.cluster is not None
        return self.config.cluster

    def start_nats(self) -> None:
        credentials.write_passwords(self.config.data_dir, self.config.passwords)
        self.cluster.start()
        auth = self.config.auth("admin")
        asyncio.run(provision(self.cluster.urls(), auth, replicas=REPLICAS, wait_s=30))

    def stop_nats(self, kill: bool = False) -> None:
        self.cluster.stop()

    def service_env(self, name: str) -> dict[str, str]:
        return {
            **super().service_env(name),
            "TRANCHE_NATS_URL": ",".join(self.cluster.urls()),
            "TRANCHE_STREAM_REPLICAS": str(REPLICAS),
            **({"TRANCHE_DATABASE_URL": self.database_urls[name]} if name in self.database_urls
               else {}),
        }  # fmt: skip


def cluster_stack(root, bots: list[str], sync_always: bool = True) -> ClusterStack:
    passwords = credentials.new_passwords()
    config = ClusterConfig(
        data_dir=root / "data",
        ports={name: free_port() for name in ("signal", "safety", "executor", "ledger")},
        replay="",
        config_file=bots_file(root / "bots.toml", bots),
        extra_env={"TRANCHE_OUTBOX_POLL_S": "0.5", "TRANCHE_LOG_LEVEL": "warning"},
        service_env={"safety": SAFETY_ENV, "ledger": LEDGER_ENV, "executor": MOCK_FAULTS},
        passwords=passwords,
        cluster=NatsCluster(root / "cluster", passwords, sync_always=sync_always),
    )
    return ClusterStack(config)


@pytest.fixture(scope="module")
def running_cluster(tmp_path_factory: pytest.TempPathFactory, request) -> Iterator[ClusterStack]:
    from tests.faults.test_workload import NAMES

    # TRANCHE_CLUSTER_SYNC=default: sync_interval left at the server's default (the comparison
    # run of docs/deploy.md); otherwise the manifests' "always".
    sync_always = os.environ.get("TRANCHE_CLUSTER_SYNC", "always") != "default"
    stack = cluster_stack(tmp_path_factory.mktemp("cluster"), NAMES, sync_always)
    print(f"cluster ring: sync_interval {'always' if sync_always else 'server default'}")
    if not stack.cluster.isolated:
        print("cluster ring: network namespaces are not allowed here; the three nodes run on "
              "loopback ports and the partition faults are left out")  # fmt: skip
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo
) -> Generator[None, Result[pytest.TestReport], None]:
    """A failed test of the ring gets the cluster's evidence in its report, taken now, while
    the nodes still run (the module's fixture tears them down later)."""
    outcome = yield
    report = outcome.get_result()
    stack = getattr(item, "funcargs", {}).get("running_cluster")
    if report.when == "call" and report.failed and isinstance(stack, ClusterStack):
        report.sections.append(("cluster evidence", capture(stack.cluster, item.name)))


def pytest_terminal_summary(terminalreporter) -> None:
    """Faults, counts checked and violations, as the fault ring prints them; then each
    fault's recovery and latencies (docs/deploy.md has them)."""
    from tests.cluster.faults import REPORT  # here: faults.py imports this module

    fault_summary(terminalreporter)
    if REPORT:
        terminalreporter.section("cluster faults")
        for line in REPORT:
            terminalreporter.write_line(f"  {line}")
