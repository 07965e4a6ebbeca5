"""Bot bodies are bounded (issue 14, items 8 and 10): a body over NATS's max payload used to
answer 500 (MaxPayloadError). Now an oversized body is 413 and an unreasonable config (too many
signals, huge parameters) is 422, each with a reason; nothing is stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.bots import read_bucket
from shared.http import MAX_BODY_BYTES
from tests.integration import test_signal_bots
from tests.integration.test_signal_bots import AUTH, running, settings_for

js = test_signal_bots.js
"""A JetStream context on the test's server (the fixture of test_signal_bots)."""
BOT = {"product_id": "ETH-BTC", "quote_size": "0.01"}
MANY = [{"name": "rsi"}] * 30_000  # valid, but stored it is over NATS's max payload (1 MB)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/bots", {"bot_id": "huge", "config": BOT | {"signals": MANY}}),
        ("PUT", "/bots/from-file", BOT | {"signals": MANY}),
    ],
)  # fmt: skip
async def test_a_body_over_the_limit_is_413_with_a_reason(
    tmp_path: Path, nats_url: str, js, method: str, path: str, body: dict
) -> None:
    async with running(settings_for(tmp_path, nats_url)) as (_, web):
        answer = await web.request(method, path, content=json.dumps(body),
                                  headers=AUTH | {"Content-Type": "application/json"})  # fmt: skip
        assert answer.status_code == 413, answer.text[:300]
        detail = answer.json()["detail"]
        assert detail["code"] == "BODY_TOO_LARGE" and str(MAX_BODY_BYTES) in detail["message"]
    assert "huge" not in await read_bucket(js._nc)


@pytest.mark.parametrize(
    "config",
    [
        BOT | {"signals": [{"name": "rsi"}] * 500},
        BOT | {"signals": [{"name": "rsi", "params": {"period": "y" * 5000}}]},
        BOT | {"signals": [{"name": "r" * 500}]},
    ],
)
async def test_an_unreasonable_config_is_422_with_a_reason(
    tmp_path: Path, nats_url: str, js, config: dict
) -> None:
    async with running(settings_for(tmp_path, nats_url)) as (_, web):
        answer = await web.post("/bots", json={"bot_id": "big", "config": config}, headers=AUTH)
        assert answer.status_code == 422, answer.text[:300]
        assert "signals" in answer.text
    assert "big" not in await read_bucket(js._nc)
