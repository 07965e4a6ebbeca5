"""``tranche nats pub`` and ``tranche nats req``: the README's ``nats pub`` / ``nats req`` lines
for users without the NATS CLI, as the operator user, against the running services."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tranche.stack import EmbeddedStack

pytestmark = pytest.mark.e2e


def nats_command(stack: EmbeddedStack, *argv: str) -> subprocess.CompletedProcess[str]:
    # The operator's password from where `tranche up` writes it, as a user's shell has it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANCHE_NATS_")}
    return subprocess.run(
        [sys.executable, "-m", "tranche", "nats", *argv, "--nats-url", stack.config.nats_url],
        env={**env, "TRANCHE_DATA_DIR": str(stack.config.data_dir)},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_nats_req_asks_the_ledger_as_the_operator(stack: EmbeddedStack) -> None:
    done = nats_command(stack, "req", "tranche.ledger.query.nobody-here", "{}")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["reason"]["code"] == "NO_POSITION"


def test_nats_pub_publishes_as_the_operator_and_a_refused_subject_is_said(
    stack: EmbeddedStack,
) -> None:
    done = nats_command(stack, "pub", "tranche.signals.inject.nobody-here", '{"side":"buy"}')
    assert done.returncode == 0, done.stderr
    assert "published 14 bytes on tranche.signals.inject.nobody-here" in done.stdout
    # The operator may not ask what only a service answers.
    refused = nats_command(stack, "req", "tranche.orders.approved.x", "{}", "--timeout", "1")
    assert refused.returncode == 1
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
