"""A trailing stop goes on across a restart of the signal service (real service, real NATS
server): the highest price since the position opened was kept only in memory, and after a
restart the trailing stop stood down until the price came back above break-even."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

from shared.money import utc_now
from tests.integration import test_signal_bots
from tests.integration.test_signal_bots import (
    _position_is,
    intents_of,
    put_open_position,
    running,
    settings_for,
)
from tests.support.catalogs import ETH_BTC
from tests.support.waiting import eventually

nats_js = test_signal_bots.js
"""A JetStream context on the test's NATS server (the fixture of test_signal_bots)."""

CONFIG = (
    ETH_BTC
    + """
[bots.trail]
product_id = "ETH-BTC"
quote_size = "0.01"
trailing_stop_pct = "5"
"""
)

T0 = utc_now().replace(microsecond=0) - timedelta(hours=1)


async def tick(js, price: str, minutes: int) -> None:
    body = {"product_id": "ETH-BTC", "price": price,
            "time": (T0 + timedelta(minutes=minutes)).isoformat()}  # fmt: skip
    await js._nc.publish("tranche.market.ticker.ETH-BTC", json.dumps(body).encode())
    await js._nc.flush()


async def before_the_fall(js, web) -> None:
    await eventually(lambda: _position_is(web, "trail", "open"), "the position read")
    for price, minute in (("0.050", 1), ("0.060", 2), ("0.058", 3)):
        await tick(js, price, minute)
    await asyncio.sleep(1.0)  # core NATS ticks: let the service take them
    assert await intents_of(js, "trail") == [], "no exit yet: 0.058 is above the stop 0.057"


async def exit_asked(js) -> list:
    async def found():
        return await intents_of(js, "trail")

    try:
        return await eventually(found, "the trailing stop's exit", timeout=8)
    except AssertionError:
        return []


async def test_as_a_control_without_a_restart_the_trailing_stop_fires(
    tmp_path: Path, nats_url: str, nats_js
) -> None:
    (tmp_path / "bots.toml").write_text(CONFIG)
    await put_open_position(nats_js, "trail", position_id="trail-mock-1", at=T0)
    async with running(settings_for(tmp_path, nats_url)) as (_, web):
        await before_the_fall(nats_js, web)
        await tick(nats_js, "0.056", 4)
        intents = await exit_asked(nats_js)
    assert [i.reason.code for i in intents] == ["TRAILING_STOP"]


async def test_after_a_restart_the_trailing_stop_still_fires(
    tmp_path: Path, nats_url: str, nats_js
) -> None:
    (tmp_path / "bots.toml").write_text(CONFIG)
    await put_open_position(nats_js, "trail", position_id="trail-mock-1", at=T0)
    settings = settings_for(tmp_path, nats_url)
    async with running(settings) as (_, web):
        await before_the_fall(nats_js, web)
    async with running(settings) as (_, web):  # the same service, restarted
        await eventually(lambda: _position_is(web, "trail", "open"), "the position read again")
        await tick(nats_js, "0.056", 4)
        intents = await exit_asked(nats_js)
    assert [i.reason.code for i in intents] == ["TRAILING_STOP"], (
        "0.056 is 6.7 % below the high 0.060 of the open position, past its 5 % trailing stop, "
        "yet the restarted signal service asked no exit"
    )
