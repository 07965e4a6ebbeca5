"""A bot's product cannot change under its position (issue 14, item 6): a bot holding 336.18 XRP
was changed to ETH-BTC with PUT /bots/{id} and its next sell sold 336.18 ETH. Now the change is
refused with 409 POSITION_OPEN while the bot holds a position, as DELETE is; other changes
still go through, and a flat bot may change product."""

from __future__ import annotations

from pathlib import Path

from shared import subjects
from shared.bots import read_bucket
from shared.contracts import BotReadiness
from shared.money import utc_now
from tests.integration import test_signal_bots
from tests.integration.test_signal_bots import (
    AUTH,
    CONFIG,
    _position_is,
    put_open_position,
    running,
    settings_for,
)
from tests.support.waiting import eventually

TWO_PRODUCTS = (
    CONFIG
    + """
[products.XRP-ETH]
base_min_size = "1"
base_increment = "1"
quote_increment = "0.00000001"
quote_min_size = "0.001"
"""
)
js = test_signal_bots.js
"""A JetStream context on the test's server (the fixture of test_signal_bots)."""
BOT = {"product_id": "ETH-BTC", "quote_size": "0.01"}


async def test_a_bot_holding_a_position_cannot_change_product(
    tmp_path: Path, nats_url: str, js
) -> None:
    (tmp_path / "bots.toml").write_text(TWO_PRODUCTS)
    await put_open_position(js, "from-file")
    async with running(settings_for(tmp_path, nats_url)) as (_, web):
        await eventually(
            lambda: _position_is(web, "from-file", "open"), "the position read from the bucket"
        )
        moved = BOT | {"product_id": "XRP-ETH", "quote_size": "0.001"}
        refused = await web.put("/bots/from-file", json=moved, headers=AUTH)
        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"]["code"] == "POSITION_OPEN"
        assert "holds 0.1 ETH-BTC" in refused.json()["detail"]["message"]
        resized = await web.put("/bots/from-file", json=BOT | {"quote_size": "0.02"}, headers=AUTH)
        assert resized.status_code == 200, resized.text  # same product: allowed
    record = (await read_bucket(js._nc))["from-file"][0]
    assert record.config.product_id == "ETH-BTC" and str(record.config.quote_size) == "0.02"


async def test_a_flat_bot_may_change_product(tmp_path: Path, nats_url: str, js) -> None:
    (tmp_path / "bots.toml").write_text(TWO_PRODUCTS)
    async with running(settings_for(tmp_path, nats_url)) as (_, web):
        await eventually(lambda: _position_is(web, "from-file", "flat"), "the positions read")
        moved = BOT | {"product_id": "XRP-ETH", "quote_size": "0.001"}
        changed = await web.put("/bots/from-file", json=moved, headers=AUTH)
        assert changed.status_code == 200, changed.text
        assert changed.json()["config"]["product_id"] == "XRP-ETH"


async def test_a_bot_with_an_order_in_flight_cannot_change_product(
    tmp_path: Path, nats_url: str, js
) -> None:
    (tmp_path / "bots.toml").write_text(TWO_PRODUCTS)
    async with running(settings_for(tmp_path, nats_url)) as (service, web):
        await eventually(lambda: _position_is(web, "from-file", "flat"), "the positions read")
        moved = BOT | {"product_id": "XRP-ETH", "quote_size": "0.001"}

        async def heard() -> bool:
            # core NATS: a message before the subscription is live is lost, so say it again,
            # as safety does after every decision and order event
            await readiness(js, "from-file", orders_in_flight=1)
            return service.in_flight.why_not_removable("from-file") is not None

        # Only once the signal has heard it: a change asked before that is (rightly) accepted,
        # and the bot would already be on the new product.
        await eventually(heard, "safety's readiness heard")
        answer = await web.put("/bots/from-file", json=moved, headers=AUTH)
        assert answer.status_code == 409 and "in flight" in answer.text, answer.text

        async def accepted() -> bool:
            await readiness(js, "from-file", orders_in_flight=0)
            return (await web.put("/bots/from-file", json=moved, headers=AUTH)).status_code == 200

        await eventually(accepted, "the change accepted once the order is final")


async def readiness(js, bot_id: str, orders_in_flight: int) -> None:
    """What safety publishes after every decision and order event of the bot (core NATS)."""
    body = BotReadiness(
        bot_id=bot_id, product_id="ETH-BTC", mode="mock", time=utc_now(),
        trading_state="active", can_enter=True, can_exit=True, max_tranches=3,
        orders_in_flight=orders_in_flight,
    )  # fmt: skip
    await js._nc.publish(
        subjects.for_token(subjects.SAFETY_READINESS, bot_id), body.model_dump_json().encode()
    )
