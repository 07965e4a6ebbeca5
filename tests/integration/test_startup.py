"""Clear errors for bad config, a busy port and an unreachable NATS: one sentence, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.support.nats_server import ROOT, free_port
from tranche.stack import EmbeddedStack, StackConfig, StackError


def run_service(name: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"services.{name}"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TRANCHE_MODE", "live", "TRANCHE_MODE"),
        ("TRANCHE_HTTP_PORT", "eighty", "TRANCHE_HTTP_PORT"),
        ("TRANCHE_ENTRY_COOLDOWN_S", "-5", "TRANCHE_ENTRY_COOLDOWN_S"),
    ],
)
def test_a_bad_setting_stops_the_service_with_one_sentence(
    variable: str, value: str, expected: str
) -> None:
    done = run_service("safety", **{variable: value})
    assert done.returncode == 2
    assert f"invalid setting: {expected}" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_busy_port_is_named_not_a_traceback(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_service("ledger", TRANCHE_HTTP_PORT=str(port), TRANCHE_DATA_DIR=str(tmp_path))
    assert done.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_unreachable_nats_fails_fast_and_says_where(tmp_path) -> None:
    done = run_service(
        "executor",
        TRANCHE_NATS_URL=f"nats://127.0.0.1:{free_port()}",
        TRANCHE_NATS_CONNECT_TIMEOUT_S="2",
        TRANCHE_HTTP_PORT=str(free_port()),
        TRANCHE_DATA_DIR=str(tmp_path),
    )
    assert done.returncode != 0
    assert "cannot reach NATS at nats://127.0.0.1:" in done.stderr
    assert "TRANCHE_NATS_URL" in done.stderr


def test_a_bad_bots_file_names_the_bot_and_field(tmp_path) -> None:
    bad = tmp_path / "bots.toml"
    bad.write_text('[products.ETH-BTC]\nbase_min_size = "0.001"\nbase_increment = "0.00000001"\n'
                   'quote_increment = "0.00000001"\nquote_min_size = "0.0001"\n'
                   '[bots.b1]\nproduct_id = "BTC-USD"\nquote_size = "10"\n')  # fmt: skip
    done = run_service("signal", TRANCHE_CONFIG_FILE=str(bad), TRANCHE_DATA_DIR=str(tmp_path))
    assert done.returncode != 0
    assert "bot b1 trades BTC-USD, which is not a product" in done.stderr


def test_the_stack_refuses_a_busy_nats_port(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = EmbeddedStack(StackConfig(data_dir=tmp_path, nats_port=port))
        with pytest.raises(StackError, match=f"port {port} \\(NATS\\) is in use"):
            stack.start()


def test_a_bad_live_feed_setting_stops_the_signal_service_with_one_sentence(tmp_path) -> None:
    done = run_service(
        "signal", TRANCHE_COINBASE_FEED="BTC-USD,btc usd", TRANCHE_DATA_DIR=str(tmp_path)
    )
    assert done.returncode != 0
    assert "TRANCHE_COINBASE_FEED: 'btc usd' is not a Coinbase product id" in done.stderr
    assert "Traceback" not in done.stderr
