"""What a failed cluster run leaves behind, taken while the nodes still run and before their
namespaces are torn down: each node's log (written at debug level, so the raft groups say why
they are not current), ``/healthz?details=true``, ``/jsz`` with every stream, consumer and raft
group, ``/routez`` and ``/varz``, under ``build/cluster-evidence/<time>-<run>/``; and the key
lines of all of it for the failure's message."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from tests.cluster.nats_cluster import NatsCluster, Node
from tranche.stack import ROOT

EVIDENCE = ROOT / "build" / "cluster-evidence"
PAGES = {
    "jsz": "/jsz?accounts=true&streams=true&consumers=true&raft=true",
    "routez": "/routez",
    "varz": "/varz",
}
INFO_WORDS = ("catchup", "catching up", "leader", "snapshot", "raft", "jetstream", "stream")
DEBUG_WORDS = ("not current", "catching up", "catchup for stream", "stall", "behind")
LOG_LINES = 30


def capture(cluster: NatsCluster, why: str, under: Path = EVIDENCE) -> str:
    """Write every node's evidence; return where it is and the key lines."""
    into = under / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{cluster.run_id}"
    into.mkdir(parents=True, exist_ok=True)
    lines = [f"cluster evidence in {into} ({why})"]
    for node in cluster.nodes:
        pages: dict[str, dict] = {}
        if node.running:
            pages["healthz"] = cluster.health(node)
            for name, path in PAGES.items():
                try:
                    pages[name] = cluster.monitor(node, path)
                except OSError as error:
                    pages[name] = {"error": str(error)}
        for name, page in pages.items():
            (into / f"{node.name}-{name}.json").write_text(json.dumps(page, indent=1))
        log = node.directory / "nats.log"
        if log.exists():
            shutil.copy(log, into / f"{node.name}.log")
        state = ("running" if node.running else "down") + (", cut off" if node.cut_off else "")
        lines.append(f"{node.name} {node.address} ({state})")
        lines += [f"  {line}" for line in key_lines(node, pages, log)]
    (into / "summary.txt").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def key_lines(node: Node, pages: dict[str, dict], log: Path) -> list[str]:
    found = []
    if "healthz" in pages:
        health = pages["healthz"]
        errors = [e.get("error", e) for e in health.get("errors") or []]
        found.append(f"healthz: {health.get('status')} {health.get('error', '')}".rstrip())
        found += [f"  {error}" for error in errors]
    jsz = pages.get("jsz", {})
    if meta := jsz.get("meta_cluster"):
        found.append(f"meta leader {meta.get('leader')}: {_replicas(meta.get('replicas'))}")
    for account in jsz.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            cluster, state = stream.get("cluster") or {}, stream.get("state") or {}
            found.append(
                f"stream {stream.get('name')}: leader {cluster.get('leader')}, last_seq "
                f"{state.get('last_seq')}; {_replicas(cluster.get('replicas'))}"
            )
    if log.exists():
        wanted = [line for line in log.read_text(errors="replace").splitlines() if _wanted(line)]
        found.append(f"log ({log.name}), last {LOG_LINES} lines about raft, catch-up, leaders:")
        found += [f"  {line}" for line in _collapsed(wanted)[-LOG_LINES:]]
    return found


def _wanted(line: str) -> bool:
    """Warnings and errors; notices about raft, catch-up and leaders; of the debug lines,
    only those that say why a group is not current."""
    lower = line.lower()
    if "[WRN]" in line or "[ERR]" in line or "[FTL]" in line:
        return True
    if "[INF]" in line:
        return any(word in lower for word in INFO_WORDS)
    return "[DBG]" in line and any(word in lower for word in DEBUG_WORDS)


def _collapsed(lines: list[str]) -> list[str]:
    """A message repeated on consecutive lines (``[pid] date time [LVL] message``) kept once:
    its last line, with how many times it came."""
    kept: list[str] = []
    last, count = "", 0
    for line in [*lines, ""]:
        message = line.split(" ", 3)[-1]
        if line and message == last:
            kept[-1], count = line, count + 1
            continue
        if count > 1:
            kept[-1] += f" (x{count}, the last of them)"
        if not line:
            break
        kept.append(line)
        last, count = message, 1
    return kept


def _replicas(replicas: list[dict] | None) -> str:
    """The other peers as this node sees them: current or not, lag, last heard from."""
    return ", ".join(
        f"{r.get('name')} current={r.get('current')} lag={r.get('lag', 0)} "
        f"active={r.get('active', 0) / 1e9:.1f}s"
        for r in replicas or []
    )
