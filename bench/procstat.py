"""CPU time and peak resident memory of a process, read from Linux's /proc (no dependency).

The benchmark runs on Linux (the project's machines and containers); elsewhere these raise.
"""

from __future__ import annotations

import os
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds the process has used so far."""
    return cpu_seconds_of(Path(f"/proc/{pid}/stat"))


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """User plus system CPU seconds of each live thread of the process, by thread id (the main
    thread's id is the process id): how a service's CPU splits between its event loop and the
    worker threads its database work runs in (``asyncio.to_thread``)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found[int(task.name)] = cpu_seconds_of(task / "stat")
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return found


def cpu_seconds_of(stat_file: Path) -> float:
    # The command name (field 2) may hold spaces: count the fields after its closing bracket.
    fields = stat_file.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S
