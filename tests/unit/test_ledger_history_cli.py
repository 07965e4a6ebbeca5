"""``tranche ledger history BOT``: the ledger's history answer shown, or its CSV written."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tranche.cli import main

HISTORY = {
    "bot_id": "b-1", "product_id": "ETH-BTC", "mode": "mock", "realized_pnl": "3.956",
    "positions": [{
        "number": 1, "status": "closed", "opened_at": "2018-01-20T12:00:00Z",
        "closed_at": "2018-01-20T14:00:00Z", "duration_s": 7200, "entries": [{}],
        "exits": [{"reason": "SIGNAL"}, {"reason": "STOP_ON_EXCHANGE"}],
        "exit_reason": "STOP_ON_EXCHANGE",
        "tranches": [], "fees_paid": "0.044", "realized_pnl": "3.956", "dust": "0",
        "dust_cost": "0", "tranche_breach": False,
    }],
    "adjustments": [],
}  # fmt: skip


@pytest.fixture
def asked(monkeypatch) -> list[str]:
    seen: list[str] = []

    def fake_get(url: str, params=None, timeout=None) -> httpx.Response:
        seen.append(url)
        request = httpx.Request("GET", url)
        if url.endswith("/positions/nobody/history"):
            return httpx.Response(404, json={"detail": "no bot named 'nobody'"}, request=request)
        if url.endswith(".csv"):
            return httpx.Response(200, text="position,kind\n1,entry\n", request=request)
        return httpx.Response(200, json=HISTORY, request=request)

    monkeypatch.setattr(httpx, "get", fake_get)
    return seen


def run(*argv: str) -> int:
    with pytest.raises(SystemExit) as done:
        main(["ledger", "history", *argv, "--url", "http://ledger"])
    return int(done.value.code)


def test_history_as_json_and_as_csv(asked, capsys, tmp_path: Path) -> None:
    assert run("b-1", "--json") == 0
    assert json.loads(capsys.readouterr().out)["realized_pnl"] == "3.956"
    assert asked == ["http://ledger/positions/b-1/history"]
    target = tmp_path / "b-1.csv"
    assert run("b-1", "--csv", str(target)) == 0
    assert target.read_text() == "position,kind\n1,entry\n"
    assert asked[-1] == "http://ledger/positions/b-1/history.csv"


def test_history_table_and_an_unknown_bot(asked, capsys) -> None:
    assert run("b-1") == 0
    out = capsys.readouterr().out
    assert "realized P&L of these positions: 3.956" in out
    assert "exit reason" in out and "STOP_ON_EXCHANGE" in out
    assert run("nobody") == 1
    assert "no bot named 'nobody'" in capsys.readouterr().err
