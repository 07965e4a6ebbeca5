"""``make bench``: Tranche end to end against the bare relay, over bots x storage x NATS sync.

    python -m bench.matrix [--quick] [--bots 1 10 100 1000] [--storage sqlite postgres]
                           [--sync always default] [--rounds N] [--profile SERVICE... | all]

For every storage (SQLite files, or one fresh PostgreSQL database per service) and NATS sync
setting (``sync_interval: always`` as shipped, or the server's default) and number of bots, a fresh
embedded stack (NATS + the four services as processes) is driven by :func:`bench.latency.drive`:
rounds of one injected signal per bot, timed from the publish to the position update. Then the
bare relay (:mod:`bench.relay`, its own process) runs on the same server with the same burst size.

Figures: latency p50/p95/p99; sustained orders booked per second; CPU time per order (the four
service processes' user+system CPU during the drive, divided by orders booked); peak RSS per
service, and how much of its CPU was the main thread's (the event loop; the rest is the worker
threads the database work runs in); each also as a ratio to the relay. ``--profile SERVICE``
(several, or ``all``) runs those services under pyinstrument and writes each one's flame graph
(HTML) and its summary (text, :mod:`bench.profiles`) to ``--profile-dir`` (``build/profiles/``,
a build output: ``make profile`` makes them again).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pyinstrument.session import Session

from bench.latency import BOT, PRODUCT, drive, summary
from bench.procstat import cpu_seconds, peak_rss_mb, thread_cpu_seconds
from bench.profiles import summarise
from tranche.stack import NATS_AUTH_CONFIG, NATS_CONFIG, EmbeddedStack, StackConfig, free_port

BUSINESS = ("signal", "safety", "executor", "ledger")
POSTGRES_ADMIN = os.environ.get(
    "TRANCHE_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# Limits that would refuse a benchmark's trades are lifted: every signal must book an order.
# The exchange limiter (Coinbase's 30 private requests/s per key) is lifted for the mock too:
# the benchmark measures Tranche, not the exchange's quota (docs/benchmarks.md).
UNLIMITED = str(10**9)
BENCH_ENV = {
    "TRANCHE_LOG_LEVEL": os.environ.get("TRANCHE_BENCH_LOG_LEVEL", "warning"),
    "TRANCHE_MAX_ENTRIES_ALL_HOUR": UNLIMITED,
    "TRANCHE_MAX_ENTRIES_ALL_DAY": UNLIMITED,
    "TRANCHE_LOSING_EXITS_IN_A_ROW": UNLIMITED,
    "TRANCHE_EXCHANGE_REQUESTS_PER_S": UNLIMITED,
}


@dataclass
class Result:
    storage: str
    sync: str
    bots: int
    orders: int
    refused: int
    unfinished: int
    tranche: dict[str, float]
    relay: dict[str, float]
    orders_per_s: float
    relay_per_s: float
    cpu_ms_per_order: float
    relay_cpu_ms: float
    rss_mb: dict[str, float] = field(default_factory=dict)
    cpu_ms_by_service: dict[str, float] = field(default_factory=dict)
    loop_ms_by_service: dict[str, float] = field(default_factory=dict)
    """Of ``cpu_ms_by_service``, the main thread's (the event loop; the rest is worker threads:
    the database work)."""
    relay_rss_mb: float = 0.0


def nats_config(scratch: Path, sync: str) -> Path | None:
    """The shipped configuration (``None``), or the same without ``sync_interval: always``: a
    copy of deploy/nats/ (the users' file includes the others by relative path)."""
    if sync == "always":
        return None
    copy = scratch / "nats-default-sync"
    shutil.copytree(NATS_CONFIG.parent, copy)
    lines = (copy / NATS_CONFIG.name).read_text().splitlines()
    (copy / NATS_CONFIG.name).write_text(
        "\n".join(line for line in lines if "sync_interval" not in line) + "\n"
    )
    return copy / NATS_AUTH_CONFIG.name


@contextmanager
def databases(storage: str) -> Iterator[dict[str, dict[str, str]]]:
    """Per-service settings for the storage: nothing for SQLite (the stack's files), a fresh
    PostgreSQL database per service otherwise, dropped afterwards."""
    if storage == "sqlite":
        yield {}
        return
    from sqlalchemy import create_engine, text

    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    names = {name: f"tranche_bench_{uuid.uuid4().hex[:8]}_{name}" for name in BUSINESS}
    base = POSTGRES_ADMIN.rsplit("/", 1)[0]
    try:
        with admin.connect() as connection:
            for db in names.values():
                connection.execute(text(f'CREATE DATABASE "{db}"'))
        yield {name: {"TRANCHE_DATABASE_URL": f"{base}/{db}"} for name, db in names.items()}
    finally:
        with admin.connect() as connection:
            for db in names.values():
                connection.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()


def profile_under_pyinstrument(stack: EmbeddedStack, name: str, out: Path) -> None:
    """Restart one service under pyinstrument, recording a session file (``out``); it is written
    when the service stops on SIGINT (see :func:`stop_profiled`) and rendered by
    :func:`render_profile`. Pyinstrument samples the main thread: the event loop (FastStream,
    pydantic, the handlers, logging); the database work in worker threads shows as the await.
    On asyncio's own loop: pyinstrument tells a wait for I/O from work by the loop's Python
    frames, and under uvloop (the services' default) the wait is inside its C loop, so every
    second would count as busy."""
    stack.stop_service(name)
    log = open(stack.logs / f"{name}.profiled.log", "ab")  # noqa: SIM115 - the child owns it
    stack.services[name] = subprocess.Popen(
        [sys.executable, "-m", "pyinstrument", "-r", "pyisession", "-o", str(out),
         "-m", f"services.{name}"],
        env=stack.service_env(name) | {"TRANCHE_EVENT_LOOP": "asyncio"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    stack.wait_ready(name, timeout=60)


def stop_profiled(stack: EmbeddedStack, name: str) -> None:
    """SIGINT, not SIGTERM: uvicorn re-raises the signal after its shutdown, and only the
    KeyboardInterrupt of a SIGINT lets pyinstrument write its report before the process ends."""
    process = stack.services[name]
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)


def render_profile(session: Path) -> list[Path]:
    """The flame graph (HTML, every frame) of a recorded session and its summary (text: busy
    time by library and by function, :mod:`bench.profiles`), beside it; the session file is
    removed."""
    html, summary = session.with_suffix(".html"), session.with_suffix(".summary.txt")
    subprocess.run(
        [sys.executable, "-m", "pyinstrument", "--load", str(session), "-r", "html",
         "-o", str(html)],
        check=True, timeout=600,
    )  # fmt: skip
    summary.write_text(summarise(Session.load(str(session))))
    session.unlink()
    return [html, summary]


def relay_run(nats_url: str, messages: int, burst: int) -> dict:
    found = subprocess.run(
        [sys.executable, "-m", "bench.relay", nats_url, "--messages", str(messages),
         "--burst", str(burst)],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if found.returncode != 0:
        raise RuntimeError(f"the relay failed:\n{found.stderr[-2000:]}")
    return json.loads(found.stdout)


def run(storage: str, sync: str, bots: int, rounds: int, relay_messages: int,
        profile: tuple[str, ...] = (), profile_dir: Path | None = None) -> Result:  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="tranche-bench-") as scratch, databases(storage) as dbs:
        root = Path(scratch)
        config = root / "bots.toml"
        config.write_text(PRODUCT + "".join(BOT.format(n=n) for n in range(bots)))
        stack = EmbeddedStack(
            StackConfig(
                data_dir=root / "data",
                nats_port=free_port(),
                nats_monitor_port=free_port(),
                ports={name: free_port() for name in BUSINESS},
                replay="",
                config_file=config,
                extra_env=BENCH_ENV,
                service_env=dbs,
                nats_config=nats_config(root, sync),
            )
        )
        stack.start()
        try:
            sessions = {}
            for name in profile:
                assert profile_dir is not None
                sessions[name] = (
                    profile_dir / f"{name}-{storage}-{sync}-{bots}.pyisession"
                ).resolve()
                profile_under_pyinstrument(stack, name, sessions[name])
            pids = {name: stack.services[name].pid for name in BUSINESS}
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            loop_before = {
                name: thread_cpu_seconds(pid).get(pid, 0.0) for name, pid in pids.items()
            }
            driven = asyncio.run(drive(stack.config.admin_url, bots, rounds))
            latencies = driven.latencies
            cpu_by = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
            loop_by = {name: thread_cpu_seconds(pid).get(pid, 0.0) - loop_before[name]
                       for name, pid in pids.items()}  # fmt: skip
            rss = {name: peak_rss_mb(pid) for name, pid in pids.items()}
            relay = relay_run(stack.config.admin_url, max(relay_messages, bots * 2), bots)
        except BaseException:
            kept = Path("var/bench-logs") / f"{storage}-{sync}-{bots}"
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(stack.logs, kept)
            print(f"failed: the services' logs are in {kept}/", file=sys.stderr)
            raise
        finally:
            for name in profile:
                stop_profiled(stack, name)
            stack.stop()
        for session in sessions.values():
            if session.exists():
                render_profile(session)
    return Result(
        storage=storage,
        sync=sync,
        bots=bots,
        orders=len(latencies),
        tranche=summary(latencies),
        relay=summary(relay["latencies"]),
        orders_per_s=len(latencies) / driven.busy_s,
        refused=driven.refused,
        unfinished=driven.unfinished,
        relay_per_s=len(relay["latencies"]) / relay["busy_s"],
        cpu_ms_per_order=sum(cpu_by.values()) * 1000 / len(latencies),
        relay_cpu_ms=relay["cpu_s"] * 1000 / len(relay["latencies"]),
        rss_mb=rss,
        cpu_ms_by_service={name: s * 1000 / len(latencies) for name, s in cpu_by.items()},
        loop_ms_by_service={name: s * 1000 / len(latencies) for name, s in loop_by.items()},
        relay_rss_mb=relay["peak_rss_mb"],
    )


HEADER = ("storage", "sync", "bots", "orders", "refused", "lost", "p50 ms", "p95 ms", "p99 ms",
          "p50 ×relay", "p99 ×relay", "orders/s", "×relay", "CPU ms/order", "×relay",
          "peak RSS MB (max)", "×relay")  # fmt: skip


def row(r: Result) -> list[str]:
    t, q = r.tranche, r.relay
    biggest = max(r.rss_mb.values())
    return [
        r.storage, r.sync, str(r.bots), str(r.orders), str(r.refused), str(r.unfinished),
        f"{t['p50']:.1f}", f"{t['p95']:.1f}", f"{t['p99']:.1f}",
        f"{t['p50'] / q['p50']:.1f}", f"{t['p99'] / q['p99']:.1f}",
        f"{r.orders_per_s:.1f}", f"{r.orders_per_s / r.relay_per_s:.2f}",
        f"{r.cpu_ms_per_order:.1f}", f"{r.cpu_ms_per_order / r.relay_cpu_ms:.1f}",
        f"{biggest:.0f}", f"{biggest / r.relay_rss_mb:.1f}",
    ]  # fmt: skip


def markdown(rows: list[list[str]], header: tuple[str, ...] | list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " ---: |" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def main() -> None:
    # Stopped from outside (a timeout, Ctrl-C of a parent): unwind, so every stack is stopped
    # and no NATS server or service outlives the benchmark.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 and 10 bots, SQLite, both sync settings, 4 rounds")  # fmt: skip
    parser.add_argument("--bots", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--storage", nargs="+", choices=["sqlite", "postgres"],
                        default=["sqlite", "postgres"])  # fmt: skip
    parser.add_argument("--sync", nargs="+", choices=["always", "default"],
                        default=["always", "default"])  # fmt: skip
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--relay-messages", type=int, default=200)
    parser.add_argument("--concurrency", type=int,
                        help="TRANCHE_CONSUMER_CONCURRENCY of the services")  # fmt: skip
    parser.add_argument("--profile", nargs="+", choices=[*BUSINESS, "all"], default=[],
                        help="run these under pyinstrument (HTML flame graphs)")  # fmt: skip
    parser.add_argument("--profile-dir", type=Path, default=Path("build/profiles"))
    args = parser.parse_args()
    if args.quick:
        args.bots, args.storage, args.rounds = [1, 10], ["sqlite"], 4
    if args.concurrency:
        BENCH_ENV["TRANCHE_CONSUMER_CONCURRENCY"] = str(args.concurrency)
    profile = BUSINESS if "all" in args.profile else tuple(args.profile)
    if profile:
        args.profile_dir.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    print(" | ".join(HEADER), flush=True)
    for storage in args.storage:
        for bots in args.bots:
            for sync in args.sync:
                # The relay sends max(relay_messages, 2 x bots) messages, `bots` at a time.
                result = run(storage, sync, bots, args.rounds, args.relay_messages,
                             profile, args.profile_dir)  # fmt: skip
                results.append(result)
                print(" | ".join(row(result)), flush=True)
    print()
    print(markdown([row(r) for r in results], HEADER))
    print()
    # Per service: peak RSS, and CPU per order (the slowest hop is the one that burns most).
    per_service = ("storage", "sync", "bots", *(f"{name} MB" for name in BUSINESS), "relay MB",
                   *(f"{name} CPU ms (loop)" for name in BUSINESS))  # fmt: skip
    print(markdown(
        [[r.storage, r.sync, str(r.bots), *(f"{r.rss_mb[n]:.0f}" for n in BUSINESS),
          f"{r.relay_rss_mb:.0f}",
          *(f"{r.cpu_ms_by_service[n]:.1f} ({r.loop_ms_by_service[n]:.1f})" for n in BUSINESS)]
         for r in results],
        per_service,
    ))  # fmt: skip
    if profile:
        print(f"\nprofiles of {', '.join(profile)}: {args.profile_dir}/ (flame graphs, summaries)")


if __name__ == "__main__":
    main()
