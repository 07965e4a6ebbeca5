"""``tranche up`` stops everything it started, whichever way it is told to: Ctrl-C (SIGINT, tested
by hand and in the stack fixture's teardown), SIGTERM from a process manager, SIGHUP when its
terminal goes away, or SIGKILL, which it cannot catch: its children then die by the kernel's
parent-death signal. While it runs it restarts a service that died.

These tests read ``tranche up``'s output from a file, as CI does: nothing here may depend on a
terminal, its width or colours (lines are compared with their whitespace collapsed)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def children_of(pid: int) -> set[int]:
    """Direct children of ``pid``, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def text_of(log: Path) -> str:
    """The log with runs of whitespace (line breaks included) made one space."""
    return " ".join(log.read_text().split())


def start_up(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    """``tranche up`` with its output to a file and no terminal, once it says it is running."""
    log = tmp_path / "up.log"
    with log.open("w") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "tranche", "up", "--no-replay", "--free-ports",
             "--data-dir", str(tmp_path / "var"), *extra],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 120
    while "Ctrl-C stops everything" not in text_of(log):
        assert up.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    return up, log


def gone(pids: set[int], timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


def service_pid(parent: int, service: str) -> int | None:
    for pid in children_of(parent):
        try:
            if f"services.{service}" in Path(f"/proc/{pid}/cmdline").read_text():
                return pid
        except OSError:
            continue
    return None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_tranche_up_stops_every_process_it_started(tmp_path: Path, sig: signal.Signals) -> None:
    up, log = start_up(tmp_path, "--no-live")
    try:
        started = children_of(up.pid)
        assert len(started) >= 6, "NATS, four services and the dashboard"
        up.send_signal(sig)
        assert up.wait(timeout=60) == 0, log.read_text()
        assert not gone(started), log.read_text()
        assert "stopped." in log.read_text()
    finally:
        if up.poll() is None:
            up.kill()


def test_a_crashed_service_comes_back_and_a_killed_up_takes_its_children_along(
    tmp_path: Path,
) -> None:
    """``kill -9`` of the executor: restarted and said so in the view (plain lines without a
    terminal) and the log. Then ``kill -9`` of ``tranche up`` itself: nothing it started lives
    on. The live view runs as the operator user and says no NATS permission error."""
    up, log = start_up(tmp_path)
    started: set[int] = set()
    try:
        started = children_of(up.pid)
        assert len(started) >= 6, "NATS, four services and the dashboard"
        executor = service_pid(up.pid, "executor")
        assert executor is not None
        os.kill(executor, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while "executor started again" not in text_of(log):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert "executor stopped (killed by SIGKILL)" in text_of(log)
        assert "services: " in text_of(log)
        port = re.search(r"executor started again on http://127\.0\.0\.1:(\d+)", text_of(log))
        assert port is not None
        supervision = (tmp_path / "var" / "logs" / "up.log").read_text()
        assert "executor stopped (killed by SIGKILL)" in supervision
        restarted = service_pid(up.pid, "executor")
        assert restarted not in (None, executor)
        started = children_of(up.pid)

        up.kill()
        up.wait(timeout=10)
        assert not gone(started), "children outlived a killed tranche up"
        assert "permissions violation" not in log.read_text()
    finally:
        if up.poll() is None:
            up.kill()
        for pid in started:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
