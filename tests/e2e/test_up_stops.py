"""``tranche up`` stops everything it started, whichever way it is told to: Ctrl-C (SIGINT, tested
by hand and in the stack fixture's teardown), SIGTERM from a process manager, or SIGHUP when its
terminal goes away. The services run in sessions of their own, so nothing but ``tranche up``
itself would stop them."""

from __future__ import annotations

import os
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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_tranche_up_stops_every_process_it_started(tmp_path: Path, sig: signal.Signals) -> None:
    log = tmp_path / "up.log"
    with log.open("w") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "tranche", "up", "--no-live", "--no-replay", "--free-ports",
             "--data-dir", str(tmp_path / "var")],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "stops everything" not in log.read_text():
            assert up.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        started = children_of(up.pid)
        assert len(started) >= 6, "NATS, four services and the dashboard"
        up.send_signal(sig)
        assert up.wait(timeout=60) == 0, log.read_text()
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in started if alive(pid)], log.read_text()
        assert "stopped." in log.read_text()
    finally:
        if up.poll() is None:
            up.kill()
