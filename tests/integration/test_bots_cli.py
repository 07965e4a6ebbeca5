"""``tranche bots`` against a running signal service (real HTTP on a port, real NATS): every
command, the token, and one-sentence refusals."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.signal.app import build
from tests.integration.test_signal_bots import TOKEN, settings_for
from tests.support.served import served
from tranche.stack import ROOT

NEW_BOTS = """
[bots.dip-buyer]
product_id = "ETH-BTC"
quote_size = "0.01"
signals = [{ name = "rsi", params = { period = 14 } }]
"""


@pytest.fixture
async def signal_url(tmp_path: Path, nats_url: str) -> AsyncIterator[str]:
    service = build(settings_for(tmp_path, nats_url))
    await service.start()
    try:
        async with served(service.http_app()) as url:
            yield url
    finally:
        await service.stop()


async def tranche(*argv: str, cwd: Path = ROOT) -> tuple[int, str, str]:
    """Run ``tranche ARGV`` as the operator would (its own process) and return (code, out, err).
    ``TRANCHE_CONTROL_TOKEN`` is not passed on: a test gives ``--token`` when it means to."""
    env = {k: v for k, v in os.environ.items() if k != "TRANCHE_CONTROL_TOKEN"}
    env["PYTHONPATH"] = str(ROOT)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from tranche.cli import main; main()", *argv,
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_every_bots_command_against_the_running_service(
    signal_url: str, tmp_path: Path
) -> None:
    url, auth = ["--signal-url", signal_url], ["--token", TOKEN, "--operator", "carol"]
    new = tmp_path / "new.toml"
    new.write_text(NEW_BOTS)

    code, out, _ = await tranche("bots", "list", *url)
    assert code == 0 and out.startswith("from-file") and "active" in out

    code, out, _ = await tranche("bots", "create", str(new), *url, *auth)
    assert code == 0 and out.startswith("dip-buyer") and "by carol" in out

    code, out, _ = await tranche("bots", "show", "dip-buyer", *url)
    shown = json.loads(out)
    assert shown["config"]["signals"][0]["name"] == "rsi" and shown["status"] == "active"

    new.write_text(NEW_BOTS.replace('quote_size = "0.01"', 'quote_size = "0.02"'))
    code, out, err = await tranche(
        "bots", "set", "dip-buyer", str(new), "--revision", str(shown["revision"]), *url, *auth
    )
    assert code == 0, err
    code, _, err = await tranche(
        "bots", "set", "dip-buyer", str(new), "--revision", str(shown["revision"]), *url, *auth
    )
    assert code == 1 and err.startswith("BOT_CONFLICT: bot dip-buyer is at revision")

    code, out, _ = await tranche("bots", "pause", "dip-buyer", *url, *auth)
    assert code == 0 and " paused " in out
    code, out, _ = await tranche("bots", "resume", "dip-buyer", *url, *auth)
    assert code == 0 and " active " in out
    code, out, _ = await tranche("bots", "remove", "dip-buyer", *url, *auth)
    assert code == 0 and out.strip() == "removed dip-buyer"

    code, out, _ = await tranche("bots", "list", "--json", *url)
    assert [bot["bot_id"] for bot in json.loads(out)] == ["from-file"]


@pytest.mark.parametrize(
    ("argv", "sentence"),
    [
        (("pause", "from-file"), "changing bots needs the operator's token"),
        (("pause", "from-file", "--token", "wrong"), "HTTP 401: a valid bearer token"),
        (("show", "ghost"), "BOT_NOT_FOUND: no bot named 'ghost'"),
        (("create", "missing.toml", "--token", TOKEN), "cannot read missing.toml"),
        (("set", "from-file", "bad.toml", "--token", TOKEN), "invalid bot: quote_size: "),
    ],
)
async def test_a_refusal_is_one_sentence_and_exit_code_1(
    signal_url: str, tmp_path: Path, argv: tuple[str, ...], sentence: str
) -> None:
    (tmp_path / "bad.toml").write_text(
        '[bots.from-file]\nproduct_id = "ETH-BTC"\nquote_size = "-1"\n'
    )
    code, out, err = await tranche("bots", *argv, "--signal-url", signal_url, cwd=tmp_path)
    assert code == 1 and out == ""
    assert err.startswith(sentence) and err.count("\n") == 1
