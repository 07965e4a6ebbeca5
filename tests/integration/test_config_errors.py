"""Bad configuration stops a service with one sentence naming the setting (issue 14, item 9):
each case starts the service's process and reads its stderr. They used to print tracebacks of
32 to 136 lines, start with an empty SQLite path, or accept a misspelled variable silently (so
a default limit applied) and a temperature of 150."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_signal_bots import CONFIG as PRODUCTS
from tests.integration.test_startup import run_service
from tests.support.nats_server import free_port

CONFIG = (
    PRODUCTS
    + """
[bots.hot]
product_id = "ETH-BTC"
quote_size = "0.01"
"""
)


def sentences(stderr: str) -> list[str]:
    """What the process said on stderr besides structured (JSON) log lines."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]


def refused(service: str, tmp_path: Path, **env: str) -> str:
    base = {
        "TRANCHE_DATA_DIR": str(tmp_path),
        "TRANCHE_HTTP_PORT": str(free_port()),
        "TRANCHE_NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "TRANCHE_NATS_CONNECT_TIMEOUT_S": "2",
    }
    done = run_service(service, **(base | env))
    said = sentences(done.stderr)
    assert done.returncode in (1, 2), done.stderr[-2000:]
    assert "Traceback" not in done.stderr and len(said) == 1, done.stderr[-2000:]
    return said[0]


@pytest.mark.parametrize(
    ("service", "value"),
    [("ledger", "garbage"), ("signal", "garbage"), ("safety", "sqlite:///"),
     ("executor", "mysql://nobody@127.0.0.1/x")],
)  # fmt: skip
def test_a_bad_database_url_is_one_sentence(tmp_path: Path, service: str, value: str) -> None:
    said = refused(service, tmp_path, TRANCHE_DATABASE_URL=value)
    assert "TRANCHE_DATABASE_URL" in said


@pytest.mark.parametrize("service", ["ledger", "safety"])
def test_an_unreachable_postgresql_is_one_sentence(tmp_path: Path, service: str) -> None:
    url = f"postgresql://tranche:secret-pw@127.0.0.1:{free_port()}/tranche"
    said = refused(service, tmp_path, TRANCHE_DATABASE_URL=url)
    assert "TRANCHE_DATABASE_URL" in said and f"127.0.0.1:{url.split(':')[3]}" in said
    assert "secret-pw" not in said


def test_bot_limits_that_are_not_json_are_one_sentence(tmp_path: Path) -> None:
    said = refused("safety", tmp_path, TRANCHE_BOT_LIMITS="garbage")
    assert "TRANCHE_BOT_LIMITS" in said


def test_a_misspelled_setting_is_refused_with_the_closest_name(tmp_path: Path) -> None:
    said = refused("safety", tmp_path, TRANCHE_MAX_ENTRIES_PER_BOT_HOURS="2")
    assert "TRANCHE_MAX_ENTRIES_PER_BOT_HOURS" in said
    assert "TRANCHE_MAX_ENTRIES_PER_BOT_HOUR?" in said


@pytest.mark.parametrize(
    ("line", "field"),
    [('inject_temperature = "150"', "inject_temperature"), ("signals = [1]", "signals")],
)
def test_a_bad_bot_in_the_file_is_one_sentence(tmp_path: Path, line: str, field: str) -> None:
    config = tmp_path / "bots.toml"
    config.write_text(CONFIG + line + "\n")
    said = refused("signal", tmp_path, TRANCHE_CONFIG_FILE=str(config))
    assert field in said and "hot" in said


def test_every_allowed_name_the_repo_uses_is_known() -> None:
    """Unknown TRANCHE_* names are refused, so every one the tests, the stack, compose, k8s and
    the benchmarks set must be a setting or a name allowed for tools (see shared/settings.py)."""
    from shared.settings import unknown_settings

    root = Path(__file__).resolve().parents[2]
    used = set()
    for folder in ("tests", "tranche", "deploy", "bench"):
        for path in (root / folder).rglob("*"):
            if path.name in MISSPELLING_TESTS:
                continue
            if path.is_file() and path.suffix in {".py", ".yml", ".yaml", ".conf", ".env", ""}:
                used |= _env_names(path.read_text(errors="replace"))
    used |= _env_names((root / "docker-compose.yml").read_text())
    assert unknown_settings(dict.fromkeys(used, "")) == [], json.dumps(sorted(used))


MISSPELLING_TESTS = {"test_config_errors.py", "test_settings.py"}
"""They misspell settings on purpose."""


def _env_names(text: str) -> set[str]:
    import re

    # Stream names (TRANCHE_ORDERS, ...) are not variables: only names set or read as variables.
    pattern = r"(TRANCHE_[A-Z0-9_]*[A-Z0-9])(?=[\"']?\s*[:=,)\]]|\"\))"
    return {name for name in re.findall(pattern, text) if name not in _STREAMS}


_STREAMS = {"TRANCHE_SIGNALS", "TRANCHE_INTENTS", "TRANCHE_ORDERS", "TRANCHE_LEDGER",
            "TRANCHE_SAFETY", "TRANCHE_DLQ", "TRANCHE_BOTS", "TRANCHE_MARKET",
            "TRANCHE_CAP_BREACHED", "TRANCHE_CAP"}  # fmt: skip
