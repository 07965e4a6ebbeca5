"""The OpenAPI of every service says what it answers (issue 14, item 12): schemathesis with
``--checks all`` (statuses, content types, response bodies, schema-valid and schema-invalid
requests, allowed methods) against each service of a running stack, 0 failures. It found, on
main: undeclared 401/404/409, /metrics declared JSON, ``quote_size`` declared a number though
numbers are refused, and a 422 whose ``detail`` is a sentence where a list was declared."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import HERE, stack_config, started
from tranche.stack import EmbeddedStack

TOKEN = "openapi-token"
SERVICES = ("signal", "safety", "executor", "ledger", "dashboard")
SCHEMATHESIS = Path(sys.executable).parent / "st"


@pytest.fixture(scope="module")
def every_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    config = stack_config(
        tmp_path_factory.mktemp("openapi"), SERVICES, control_token=TOKEN,
        extra_env={"TRANCHE_OUTBOX_POLL_S": "0.5"},
    )  # fmt: skip
    with started(config) as running:
        yield running


def schemathesis(url: str, workdir: Path) -> subprocess.Popen[str]:
    """``st run --checks all`` against one service, bounded examples, a fixed seed; in
    ``workdir``, where it keeps its cache (never in the checkout)."""
    command = [
        str(SCHEMATHESIS), "--config-file", str(HERE / "schemathesis.toml"), "run",
        f"{url}/openapi.json", "--checks", "all", "--max-examples", "5", "--seed", "14",
        "--exclude-path", "/events",  # never ends: its content type is checked below
        "-H", f"Authorization: Bearer {TOKEN}", "--no-color",
    ]  # fmt: skip
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=workdir,
    )


@pytest.mark.e2e
def test_the_openapi_of_every_service_is_true(every_service: EmbeddedStack, tmp_path: Path) -> None:
    # The five runs at once: each mostly waits for its service's answers.
    runs = {
        service: schemathesis(every_service.config.url(service), tmp_path) for service in SERVICES
    }
    failed = {}
    for service, run in runs.items():
        output, _ = run.communicate(timeout=180)
        if run.returncode != 0:
            failed[service] = output[-5000:]
    assert not failed, "\n".join(f"===== {name}\n{text}" for name, text in failed.items())


@pytest.mark.e2e
def test_the_event_stream_is_declared_as_one(every_service: EmbeddedStack) -> None:
    url = every_service.config.url("dashboard")
    declared = httpx.get(f"{url}/openapi.json", timeout=10).json()["paths"]["/events"]["get"]
    assert list(declared["responses"]["200"]["content"]) == ["text/event-stream"]
    with httpx.stream("GET", f"{url}/events", timeout=10) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
