"""``tranche orders``: lists orders with why each ended; ``resolve`` sends the operator's
settlement with the token, and says when it is refused."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tranche.cli import parser

ORDER = {
    "client_order_id": "c-1", "bot_id": "b", "mode": "mock", "action": "entry", "side": "buy",
    "status": "failed", "filled_size": "0", "last_error": None,
    "reason": {"code": "NO_MARKET_PRICE", "message": "no market price for ETH-BTC"},
}  # fmt: skip


def test_orders_lists_each_order_with_its_reason(monkeypatch, capsys) -> None:
    def get(url: str, **_: Any) -> httpx.Response:
        assert url.endswith("/orders")
        return httpx.Response(200, json=[ORDER])

    monkeypatch.setattr(httpx, "get", get)
    args = parser().parse_args(["orders"])
    assert args.run(args) == 0
    assert "c-1" in capsys.readouterr().out.replace("\n", " ")
    args = parser().parse_args(["orders", "--json", "list"])
    assert args.run(args) == 0
    assert "NO_MARKET_PRICE" in capsys.readouterr().out


@pytest.mark.parametrize(("status", "code"), [(200, 0), (409, 1)])
def test_resolve_sends_the_settlement_with_the_token(monkeypatch, status: int, code: int) -> None:
    sent: dict[str, Any] = {}

    def post(url: str, json: dict, headers: dict, **_: Any) -> httpx.Response:
        sent.update(url=url, body=json, headers=headers)
        return httpx.Response(status, json={"detail": "NOT_LOST: c-9 is open"})

    monkeypatch.setattr(httpx, "post", post)
    args = parser().parse_args(
        ["orders", "resolve", "c-9", "--as", "filled", "--reason", "per statement",
         "--size", "0.01", "--price", "50000", "--fee", "3", "--token", "tok",
         "--operator", "ann"]
    )  # fmt: skip
    assert args.run(args) == code
    assert sent["url"].endswith("/orders/c-9/resolve")
    assert sent["headers"] == {"Authorization": "Bearer tok"}
    assert sent["body"] == {
        "as": "filled", "reason": "per statement", "operator": "ann",
        "size": "0.01", "price": "50000", "fee": "3",
    }  # fmt: skip


def test_resolve_without_a_token_says_so(monkeypatch, capsys) -> None:
    monkeypatch.delenv("TRANCHE_CONTROL_TOKEN", raising=False)
    args = parser().parse_args(["orders", "resolve", "c-9", "--as", "cancelled", "--reason", "x"])
    args.token = None
    assert args.run(args) == 2
    assert "TRANCHE_CONTROL_TOKEN" in capsys.readouterr().err
