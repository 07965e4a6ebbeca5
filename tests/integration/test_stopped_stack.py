"""Commands against a stack that is not running say so in one sentence, within 3 s, and
``--json`` prints only JSON (stdout), whatever else they have to say (stderr)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tranche.stack import ROOT, free_port

LIMIT_S = 3.0
SLACK_S = 7.0
"""A whole command also starts an interpreter and imports its modules, which on a loaded shared
machine takes seconds of its own: the 3 s are checked in-process, the command with this slack."""


def run(tmp_path: Path, *argv: str) -> tuple[subprocess.CompletedProcess[str], float]:
    nats_url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    env = {
        **os.environ,
        "TRANCHE_NATS_URL": nats_url,
        "TRANCHE_DATA_DIR": str(tmp_path),
        "TRANCHE_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "TRANCHE_CONFIG_FILE": str(ROOT / "config" / "tranche.toml"),
    }
    # The interpreter's start (imports) is not the command's wait: measured from a warm start.
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "tranche", *argv, "--nats-url", nats_url]
        if argv[0] in ("signal", "halt", "nats")
        else [sys.executable, "-m", "tranche", *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    return done, time.monotonic() - started


async def test_connecting_to_a_stopped_nats_gives_up_within_3_s() -> None:
    from tranche.credentials import operator_connect

    started = time.monotonic()
    with pytest.raises(ConnectionError, match="is the stack running"):
        await operator_connect(f"nats://127.0.0.1:{free_port()}", user="nobody")
    assert time.monotonic() - started < LIMIT_S


@pytest.mark.parametrize(
    "argv",
    [
        ("signal", "eth-btc-momentum", "buy"),
        ("halt", "--reason", "test"),
        ("nats", "pub", "tranche.signals.inject.eth-btc-momentum", '{"side":"buy"}'),
        ("nats", "req", "tranche.ledger.query.eth-btc-momentum", ""),
    ],
    ids=["signal", "halt", "nats-pub", "nats-req"],
)
def test_a_command_against_a_stopped_stack_fails_in_one_sentence_within_3_s(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    done, took = run(tmp_path, *argv)
    assert done.returncode != 0
    said = done.stderr.strip()
    assert len(said.splitlines()) == 1, said
    assert "is the stack running" in said, said
    assert "Traceback" not in said
    assert took < LIMIT_S + SLACK_S, (took, said)


def test_ledger_rebuild_without_nats_says_so_quickly_and_json_stays_json(tmp_path: Path) -> None:
    done, took = run(tmp_path, "ledger", "rebuild", "--json")
    assert json.loads(done.stdout) == []
    assert "TimeoutError: )" not in done.stderr
    assert "is the stack running" in done.stderr, done.stderr
    assert took < LIMIT_S + SLACK_S, (took, done.stderr)


async def test_ledger_rebuild_json_is_only_json_when_a_bot_record_is_bad(
    tmp_path: Path, nats_url: str
) -> None:
    """A bad record in the bots bucket is warned about on stderr, never before the JSON."""
    import nats

    from shared import subjects
    from shared.streams import ensure_streams

    nc = await nats.connect(nats_url)
    try:
        await ensure_streams(nc.jetstream())
        kv = await nc.jetstream().key_value(subjects.BOTS_BUCKET)
        await kv.put("broken-bot", b"{not a bot record")
    finally:
        await nc.close()
    env = {
        **os.environ,
        "TRANCHE_NATS_URL": nats_url,
        "TRANCHE_DATA_DIR": str(tmp_path),
        "TRANCHE_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "TRANCHE_CONFIG_FILE": str(ROOT / "config" / "tranche.toml"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tranche", "ledger", "rebuild", "--json"],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert json.loads(done.stdout) == [], done.stdout
    assert "broken-bot" in done.stderr
