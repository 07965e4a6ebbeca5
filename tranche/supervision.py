"""Restarting the services ``tranche up`` started: the pure part (no process, no clock inside).

A service that exits on its own is started again after a back-off that doubles with each quick
failure (1 s, 2 s, 4 s, ... up to :attr:`RestartPolicy.max_delay_s`); one that ran for at least
:attr:`RestartPolicy.healthy_after_s` before it exited counts as healthy again, so a crash a day
never exhausts anything. After :attr:`RestartPolicy.give_up_after` quick failures in a row the
service is left stopped, with the reason (its exit code and the last line of its log).

:class:`Supervisor` only decides; :mod:`tranche.stack` polls the processes, tells it what it saw
(:meth:`Supervisor.exited`) and asks which service is due (:meth:`Supervisor.due`).
"""

from __future__ import annotations

import json
import signal
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

RUNNING = "running"
RESTARTING = "restarting"
GAVE_UP = "gave up"
STOPPED = "stopped"
"""Stopped on purpose (``tranche up`` ending, a test): never restarted."""


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    healthy_after_s: float = 60.0
    """A run at least this long resets the count of quick failures."""
    give_up_after: int = 5
    """Quick failures in a row after which a service is left stopped."""


@dataclass
class ServiceRun:
    """One service as the supervisor sees it. Times are monotonic seconds."""

    name: str
    state: str = RUNNING
    started_at: float = 0.0
    restarts: int = 0
    quick_failures: int = 0
    restart_at: float | None = None
    last_exit: str | None = None
    """Why it last stopped, in a few words (``exit 1: <last log line>``, ``killed by SIGKILL``)."""

    def describe(self, now: float) -> str:
        """One short phrase for the live view and the log: ``running``, ``restarting in 4 s
        (killed by SIGKILL)``, ``gave up after 5 quick failures (exit 1: ...)``."""
        if self.state == RUNNING:
            return f"running (restarted {self.restarts}x)" if self.restarts else "running"
        if self.state == RESTARTING and self.restart_at is not None:
            left = max(0, round(self.restart_at - now))
            return f"restarting in {left} s ({self.last_exit})"
        if self.state == STOPPED:
            return "stopped"
        return f"gave up after {self.quick_failures} quick failures ({self.last_exit})"


@dataclass
class Supervisor:
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    runs: dict[str, ServiceRun] = field(default_factory=dict)

    def started(self, name: str, now: float) -> None:
        """``name`` was (re)started at ``now``."""
        run = self.runs.setdefault(name, ServiceRun(name))
        if run.state == RESTARTING:
            run.restarts += 1
        run.state, run.started_at, run.restart_at = RUNNING, now, None

    def stopped(self, name: str) -> None:
        """``name`` is being stopped on purpose: not a failure, not restarted."""
        if name in self.runs:
            self.runs[name].state = STOPPED

    def exited(self, name: str, why: str, now: float) -> ServiceRun:
        """``name`` exited on its own at ``now``; returns what happens next (a restart time, or
        the supervisor giving up)."""
        run = self.runs.setdefault(name, ServiceRun(name, started_at=now))
        run.last_exit = why
        if now - run.started_at >= self.policy.healthy_after_s:
            run.quick_failures = 0
        run.quick_failures += 1
        if run.quick_failures >= self.policy.give_up_after:
            run.state, run.restart_at = GAVE_UP, None
            return run
        delay = min(
            self.policy.max_delay_s, self.policy.first_delay_s * 2 ** (run.quick_failures - 1)
        )
        run.state, run.restart_at = RESTARTING, now + delay
        return run

    def due(self, now: float) -> list[str]:
        """Services whose back-off is over, to start now."""
        return [
            run.name
            for run in self.runs.values()
            if run.state == RESTARTING and run.restart_at is not None and run.restart_at <= now
        ]

    def summary(self, now: float) -> dict[str, str]:
        """Each service's state in a phrase, in the order they were first started."""
        return {name: run.describe(now) for name, run in self.runs.items()}


def exit_reason(returncode: int, last_line: str = "") -> str:
    """``exit 1: <last log line>`` or ``killed by SIGKILL``: why a process ended, briefly."""
    if returncode < 0:
        try:
            why = f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            why = f"killed by signal {-returncode}"
    else:
        why = f"exit {returncode}"
    line = last_line.strip()
    return f"{why}: {line[:120]}" if line and returncode >= 0 else why


class SupervisionLog:
    """What the supervisor did, for people: each sentence goes to ``path`` as a JSON line (with
    its UTC time), to ``echo`` when given (``tranche up --no-live`` prints them) and stays in
    :attr:`recent` for the live view."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None = None, keep: int = 3):
        self.path = path
        self.echo = echo
        self.recent: deque[str] = deque(maxlen=keep)

    def add(self, sentence: str) -> None:
        at = datetime.now(UTC)
        self.recent.append(f"{at:%H:%M:%S} {sentence}")
        line = {"time": at.isoformat(), "event": "up.supervision", "message": sentence}
        with self.path.open("a") as log:
            log.write(json.dumps(line) + "\n")
        if self.echo is not None:
            self.echo(sentence)
