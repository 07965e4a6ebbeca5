"""The report as a trader gets it: terminal tables that keep every figure whole, JSON with
decimal strings and UTC times, and an HTML page that carries its own plotting library."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from rich.console import Console

from tests.support.backtest_results import D, at, bot, marks, result, sample
from tranche.backtest.report import render, to_json, write_html, write_outputs


def printed(width: int, fmt: str = "table", made=None) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    render(made or sample(), fmt, console)
    return console.file.getvalue()


def test_the_terminal_report_shows_each_bot_beside_buy_and_hold() -> None:
    text = printed(120)
    assert "eth-rsi · ETH-BTC · capital 0.3 BTC" in text
    assert "all bots · ETH-BTC · capital 0.6 BTC" in text
    assert re.search(
        r"total P&L\s+│ \+0\.0002688 \(\+0\.09 %\)\s+│ -0\.00245195 \(-0\.82 %\)", text
    )
    assert re.search(r"win rate\s+│ 50\.00 %\s+│ —", text)
    assert "n/a (no day lost money)" in text
    assert "fee rate 0.60 %" in text
    assert "ENTRY_COOLDOWN 2, DAILY_LOSS_LIMIT 1" in text
    assert "CONSECUTIVE_LOSSES" in text and "2018-01-22T21:00Z" in text
    assert "TAKE_PROFIT" in text and "STOP_LOSS" in text
    # A position a line, in a table of the bot's own.
    assert "Positions of eth-macd" in text
    assert re.search(r"2018-01-22T02:00Z │ 2018-01-22T09:00Z │ 2\s+│ \+0\.0021896 │", text)
    assert re.search(r"2018-01-24T12:00Z │ open\s+│ 1\s+│ -0\.0005388 │", text)


def test_at_80_columns_nothing_is_cut_or_wider() -> None:
    text = printed(80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    assert "ENTRY_COOLDOWN 2, DAILY_LOSS_LIMIT 1" in text


def test_a_run_without_trades_says_so() -> None:
    quiet = result([bot("eth")], marks(["0.09", "0.1"]))
    text = printed(120, made=quiet)
    assert "Positions of eth: none (no entry was filled)" in text
    assert "fee rate unknown (buy-and-hold without fees)" in text


def test_json_carries_decimals_as_strings_and_times_in_utc() -> None:
    report = json.loads(printed(200, "json"))
    eth = report["bots"][0]
    assert eth["title"] == "eth-rsi"
    assert eth["performance"]["total_pnl"] == "0.0002688"
    assert eth["performance"]["win_rate_pct"] == "50.000000"
    assert eth["performance"]["average_loss"] == "-0.0019208000"  # a mean: to 10 places
    assert eth["performance"]["sortino"] == {
        "value": None,
        "undefined_because": "no day lost money",
    }
    assert eth["positions"][0]["opened_at"] == "2018-01-22T02:00:00+00:00"
    assert eth["positions"][0]["closed_at"] == "2018-01-22T09:00:00+00:00"
    assert eth["safety"]["rejected"] == {"ENTRY_COOLDOWN": 2}
    assert eth["safety"]["rejected_total"] == 2
    assert report["fee_rate"] == "0.006"
    assert report["start"] == "2018-01-22T00:00:00+00:00"
    # One equity point a UTC day unless every mark is asked for.
    assert [p["at"][:10] for p in eth["daily_equity"]] == ["2018-01-22", "2018-01-23", "2018-01-24"]
    assert eth["daily_equity"][-1]["equity"] == "0.3002688"
    assert "equity" not in eth
    assert len(json.loads(to_json(sample(), curves=True))["bots"][0]["equity"]) == 72


def test_json_decimals_read_back_exactly() -> None:
    report = json.loads(to_json(sample()))
    overall = report["overall"][0]["performance"]
    parts = [D(b["performance"]["total_pnl"]) for b in report["bots"]]
    assert D(overall["total_pnl"]) == sum(parts)


def test_the_html_page_carries_plotly_and_asks_for_nothing(tmp_path: Path) -> None:
    path = write_html(sample(), tmp_path / "report.html")
    html = path.read_text()
    assert "<script src" not in html and "<link" not in html
    assert "Plotly.newPlot" in html and "plotly.js" in html.lower()
    assert len(re.findall(r'<section class="bot"', html)) == 2
    assert len(re.findall(r'<section class="overall"', html)) == 1
    assert 'id="plot-bot-0"' in html and 'id="plot-all-0"' in html
    assert "CONSECUTIVE_LOSSES" in html


def test_html_escapes_what_it_shows(tmp_path: Path) -> None:
    made = result([bot("<b>x</b>")], marks(["0.09", "0.1"]), end=at(2))
    html = write_html(made, tmp_path / "r.html").read_text()
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_the_command_writes_the_json_and_the_page_it_is_given(tmp_path: Path) -> None:
    console = Console(width=120, file=io.StringIO(), color_system=None)
    page, data = tmp_path / "report.html", tmp_path / "report.json"
    write_outputs(sample(), data, page, console)
    assert json.loads(data.read_text())["bots"][0]["title"] == "eth-rsi"
    assert page.read_text().startswith("<!DOCTYPE html>")
    assert console.file.getvalue().splitlines() == [f"wrote {data}", f"wrote {page}"]
    console = Console(width=120, file=io.StringIO(), color_system=None)
    write_outputs(sample(), None, None, console)
    assert console.file.getvalue() == ""
