"""``tranche``: the operator's command.

tranche up                         the embedded stack with a live view, until Ctrl-C
tranche status [--json]            positions, last decisions, service health
tranche signal BOT buy|sell        what `nats pub tranche.signals.inject.BOT '{...}'` does
tranche bots list|show|create|set|pause|resume|remove   bots while the system runs
tranche outbox replay --since T    refill lost streams from the services' outboxes
tranche nats provision             create the streams as the NATS admin user (deployments)

Commands that talk to NATS log in as the ``operator`` user: TRANCHE_NATS_USER and
TRANCHE_NATS_PASSWORD, or the password `tranche up` wrote to <data dir>/secrets/nats-operator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from rich.console import Console

from shared.logging import configure
from shared.settings import DEFAULT_PORTS
from tranche import (
    bots_cli,
    dlq_cli,
    ledger_cli,
    nats_cli,
    orders_cli,
    outbox_cli,
    replay,
    safety_cli,
)
from tranche.backtest import cli as backtest_cli
from tranche.credentials import operator_connect
from tranche.stack import EmbeddedStack, StackConfig, StackError, free_port
from tranche.status import SERVICES, VIEWS, gather, render
from tranche.supervision import SupervisionLog

DEFAULT_NATS_URL = "nats://127.0.0.1:4250"


def _service_urls(args: argparse.Namespace) -> dict[str, str]:
    base = {name: DEFAULT_PORTS[name] for name in (*SERVICES, *VIEWS)}
    return {name: f"http://{args.host}:{port}" for name, port in base.items()} | {
        **dict(item.split("=", 1) for item in args.url or [])
    }


def cmd_up(args: argparse.Namespace) -> int:
    config = StackConfig(
        data_dir=Path(args.data_dir),
        nats_port=free_port() if args.free_ports else args.nats_port,
        nats_monitor_port=free_port() if args.free_ports else args.nats_monitor_port,
        replay="" if args.no_replay else StackConfig().replay,
        replay_speed=args.replay_speed,
        # The bots file only seeds the bots bucket; this makes it win over run-time changes.
        service_env={"signal": {"TRANCHE_BOTS_RESEED": "true"}} if args.reseed_bots else {},
    )
    if args.free_ports:
        config.ports = {name: free_port() for name in (*SERVICES, *VIEWS)}
    # Without a terminal (a pipe, a CI log) lines stay whole: no wrapping at 80 columns.
    console = Console(soft_wrap=not sys.stdout.isatty())
    stack = EmbeddedStack(config)
    console.print(f"starting NATS on {config.nats_url}, four services and the dashboard (mock) ...")
    try:
        stack.start()
    except StackError as error:
        console.print(f"[bold red]cannot start:[/] {error}")
        return 2
    for name in ("signal", "safety", "executor", "ledger"):
        console.print(f"  {name:<9} {config.url(name)}  (/health /ready /metrics /docs)")
    console.print(f"  [bold]dashboard {config.url('dashboard')}/[/]  (the live web page)")
    console.print(
        f"  kill-switch token for the dashboard's halt/resume: {config.control_token}"
        + ("  (from TRANCHE_CONTROL_TOKEN)" if os.environ.get("TRANCHE_CONTROL_TOKEN") else "")
    )
    console.print(
        f"  NATS      a user per service; this run's passwords in {config.data_dir}/secrets/"
        " (tranche signal/halt read nats-operator)"
    )
    console.print(f"  logs      {stack.logs}/   data {config.data_dir}/   Ctrl-C stops everything")
    stop = asyncio.Event()
    # Without the tables (--no-live, or no terminal) what the supervisor does is printed too.
    plain = args.no_live or not console.is_terminal
    notes = SupervisionLog(stack.logs / "up.log", echo=console.print if plain else None)
    try:

        async def run() -> None:
            _install_stop(stop)
            watching = asyncio.create_task(_supervise(stack, stop, notes))
            try:
                if args.no_live:
                    await stop.wait()
                else:
                    from tranche.live import run_live

                    await run_live(
                        config.nats_url,
                        stop,
                        auth=config.auth("operator"),
                        urls={name: config.url(name) for name in config.services},
                        services=lambda: stack.supervisor.summary(time.monotonic()),
                        notes=notes.recent,
                    )
            finally:
                stop.set()
                await watching

        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    finally:
        # The terminal may be gone (a hang-up): stopping must not depend on printing.
        with contextlib.suppress(OSError):
            console.print("stopping services and NATS ...")
        stack.stop()
        with contextlib.suppress(OSError):
            console.print("stopped.")
    return 0


async def _supervise(stack: EmbeddedStack, stop: asyncio.Event, notes: SupervisionLog) -> None:
    """Restart what exits on its own (with back-off; tranche/supervision.py) until ``stop``."""
    while not stop.is_set():
        for sentence in stack.supervise():
            notes.add(sentence)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)


def _install_stop(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    # A closed terminal (SIGHUP) stops the stack like Ctrl-C: the services run in sessions of
    # their own and would otherwise outlive it.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)


def cmd_status(args: argparse.Namespace) -> int:
    status = gather(_service_urls(args), decisions=args.decisions)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        render(status, Console())
    return 0 if all(s["ready"] for s in status["services"].values()) else 1


def cmd_signal(args: argparse.Namespace) -> int:
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout

    payload: dict[str, object] = {"side": args.side}
    if args.temperature is not None:
        payload["temperature"] = args.temperature
    if args.confirmed:
        payload["confirmed"] = True
    subject = f"tranche.signals.inject.{args.bot}"
    body = json.dumps(payload, separators=(",", ":"))

    async def publish() -> str:
        nc = await operator_connect(args.nats_url)
        try:
            # The same subject and payload as `nats pub`, no headers; asking for the reply only
            # lets us say the stream stored it.
            reply = await nc.request(subject, body.encode(), timeout=3)
            ack = json.loads(reply.data)
            return f"stored in {ack.get('stream')} as sequence {ack.get('seq')}"
        finally:
            await nc.close()

    try:
        outcome = asyncio.run(publish())
    except (NoRespondersError, NatsTimeout):
        print(f"no stream answered on {subject}: is the stack running?", file=sys.stderr)
        return 1
    except OSError as error:  # operator_connect's ConnectionError is the one sentence
        print(error, file=sys.stderr)
        return 1
    print(f"nats pub {subject} '{body}'  ->  {outcome}")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="tranche", description=__doc__.split("\n\n")[0])
    commands = root.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run the embedded stack with a live view")
    up.add_argument("--data-dir", default=os.environ.get("TRANCHE_DATA_DIR", "var"))
    up.add_argument("--nats-port", type=int, default=4250)
    up.add_argument("--nats-monitor-port", type=int, default=8250)
    up.add_argument("--replay-speed", type=float, default=120.0, help="event s per wall s; 0 = max")
    up.add_argument("--no-replay", action="store_true", help="no market data replay")
    up.add_argument("--no-live", action="store_true", help="no live view (for scripts)")
    up.add_argument(
        "--free-ports",
        action="store_true",
        help="NATS and every service on ports nothing uses (printed), beside another stack",
    )
    up.add_argument(
        "--reseed-bots",
        action="store_true",
        help="put the bots file's bots back as the file says (run-time changes to them are lost)",
    )
    up.set_defaults(run=cmd_up)

    status = commands.add_parser("status", help="positions, last decisions, service health")
    status.add_argument("--json", action="store_true")
    status.add_argument("--host", default="127.0.0.1")
    status.add_argument("--url", action="append", help="SERVICE=URL, e.g. ledger=http://h:8104")
    status.add_argument("--decisions", type=int, default=10)
    status.set_defaults(run=cmd_status)

    sig = commands.add_parser("signal", help="inject a signal for a bot")
    sig.add_argument("bot")
    sig.add_argument("side", choices=["buy", "sell"])
    sig.add_argument("--temperature", type=float, help="0-100 (default: the bot's)")
    sig.add_argument("--confirmed", action="store_true", help="skip confirmation (mock only)")
    sig.add_argument("--nats-url", default=os.environ.get("TRANCHE_NATS_URL", DEFAULT_NATS_URL))
    sig.set_defaults(run=cmd_signal)

    ledger_cli.register(commands)
    safety_cli.register(commands)
    bots_cli.register(commands)
    orders_cli.register(commands)
    nats_cli.register(commands)
    replay.register(commands)
    backtest_cli.register(commands)
    outbox_cli.register(commands)
    dlq_cli.register(commands)
    return root


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    # What the command prints is its answer (``--json``: only JSON); warnings from the shared
    # code it runs go to stderr as plain lines.
    configure("tranche", level="warning", fmt="console")
    raise SystemExit(args.run(args))
