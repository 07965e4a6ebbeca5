"""Production sizes by the exchange's product rules (``get_product``), not the bots file's, and
refuses in one sentence a product the exchange does not list or will not take the order for.
Against the Coinbase stand-in, whose ETH-BTC rules differ from the bots file's (minimum size
0.00022, not 0.001; price increment 0.00001, not 0.00000001)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tests.support.coinbase_standin import ApiKey, CoinbaseStandIn, product_json
from tests.support.live_executor import PREFIX, Live, start_live, stop_live

ETH_BTC = {"product_id": "ETH-BTC", "side": "buy", "order_type": "limit"}


async def test_a_limit_price_is_rounded_to_the_exchange_s_increment(live: Live) -> None:
    """Issue 17 item 1: the bots file's 1e-8 increment sent a price Coinbase refuses."""
    cid = await live.approve(1, **ETH_BTC, base_size=Decimal("0.01"),
                             limit_price=Decimal("0.05123456"))  # fmt: skip
    row = await live.settled(cid)
    assert row.status == "open", live.reason(cid)
    assert row.limit_price == Decimal("0.05123")  # a buy rounds down: never pays more
    (order,) = live.standin.orders.values()
    assert order.configuration["limit_limit_gtc"]["limit_price"] == "0.05123"
    assert live.requests("GET", f"{PREFIX}/products/ETH-BTC") >= 1


async def test_the_exchange_s_minimum_size_is_the_one_that_counts(live: Live) -> None:
    """0.0005 ETH is below the bots file's 0.001 but above Coinbase's 0.00022: it is placed."""
    cid = await live.approve(2, **ETH_BTC, base_size=Decimal("0.0005"),
                             limit_price=Decimal("0.05"))  # fmt: skip
    assert (await live.settled(cid)).status == "open", live.reason(cid)
    small = await live.approve(3, **ETH_BTC, base_size=Decimal("0.0002"),
                               limit_price=Decimal("0.05"))  # fmt: skip
    assert (await live.settled(small)).status == "failed"
    assert live.reason(small)["code"] == "BELOW_MIN_SIZE"  # type: ignore[index]
    assert "0.00022" in live.reason(small)["message"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("flags", "order", "code"),
    [
        ({"status": "delisted", "trading_disabled": True}, {}, "PRODUCT_DISABLED"),
        ({"cancel_only": True}, {}, "PRODUCT_CANCEL_ONLY"),
        ({"limit_only": True}, {"order_type": "market", "quote_size": Decimal("100"),
                                "base_size": None, "limit_price": None}, "PRODUCT_LIMIT_ONLY"),
        ({"post_only": True}, {}, "PRODUCT_POST_ONLY"),
        (None, {}, "PRODUCT_NOT_LISTED"),
    ],
)  # fmt: skip
async def test_production_refuses_a_product_the_exchange_will_not_take_the_order_for(
    standin: CoinbaseStandIn, key: ApiKey, nats_url: str, tmp_path: Path,
    flags: dict | None, order: dict, code: str,
) -> None:  # fmt: skip
    if flags is None:
        del standin.products["BTC-USD"]
    else:
        standin.products["BTC-USD"] = product_json("BTC-USD", **flags)
    live = await start_live(standin, key, nats_url, tmp_path)
    try:
        cid = await live.approve(4, **order)
        row = await live.settled(cid)
        reason = live.reason(cid)
    finally:
        await stop_live(live)
    assert row.status == "failed" and standin.orders == {}
    assert reason is not None and reason["code"] == code
    assert "BTC-USD" in reason["message"] and reason["message"].count(".") <= 1  # one sentence
