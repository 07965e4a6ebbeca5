"""The backtest's HTML report in a real headless browser (Debian's Chromium, driven by
Playwright), opened from a file with every request but the page's own refused: the plots are
drawn (SVG with their traces), each fill is one entry or exit marker on the price, and the page
asked the network for nothing.

Needs ``/usr/bin/chromium`` (Debian package ``chromium``); the test fails, never skips, without it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Route, expect, sync_playwright

from tests.e2e.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.backtest_results import sample
from tranche.backtest.report import write_html

pytestmark = pytest.mark.e2e

BOT_TRACES = 7  # price, entries, exits, equity ×2, drawdown ×2
OVERALL_TRACES = 4  # equity ×2, drawdown ×2
WAIT = 60_000  # ms: a loaded two-core machine parses and draws slowly


def test_the_report_draws_its_plots_offline(tmp_path: Path) -> None:
    assert Path(CHROMIUM).exists(), "install Debian's chromium: apt-get install -y chromium"
    result = sample()
    page_url = write_html(result, tmp_path / "report.html").resolve().as_uri()
    outside: list[str] = []
    errors: list[str] = []

    def only_the_page(route: Route) -> None:
        if route.request.url == page_url:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1300, "height": 1000})
            tab.on("pageerror", lambda error: errors.append(str(error)))
            tab.route("**/*", only_the_page)
            tab.goto(page_url, timeout=120_000)  # 5 MB of inlined script: slow on a busy machine
            sections = tab.locator("section.bot")
            expect(sections).to_have_count(len(result.bots))
            for number, bot in enumerate(result.bots):
                expect(sections.nth(number)).to_have_attribute("data-bots", bot.bot_id)
                plot = tab.locator(f"#plot-bot-{number}")
                # plotly draws after the page has loaded: expect() waits until it has.
                expect(plot.locator(".scatterlayer .trace")).to_have_count(BOT_TRACES, timeout=WAIT)
                fills = [f for f in result.fills if f.bot_id == bot.bot_id]
                buys = sum(1 for f in fills if f.side == "BUY")
                points = plot.locator(".scatterlayer path.point")
                expect(points).to_have_count(len(fills), timeout=WAIT)
                # Entries are drawn as up-triangles, exits as down-triangles, each its own trace.
                marker_traces = plot.locator(".scatterlayer .trace:has(path.point)")
                expect(marker_traces).to_have_count(2 if 0 < buys < len(fills) else 1)
                assert sorted(t.locator("path.point").count() for t in marker_traces.all()) == (
                    sorted(n for n in (buys, len(fills) - buys) if n)
                )
                # The price line and the equity curves are real paths through many points.
                lines = plot.locator(".scatterlayer .trace path.js-line")
                expect(lines).to_have_count(BOT_TRACES - 2, timeout=WAIT)
                assert all(len(line.get_attribute("d") or "") > 100 for line in lines.all())
            overall = tab.locator("#plot-all-0 .scatterlayer .trace")
            expect(overall).to_have_count(OVERALL_TRACES, timeout=WAIT)
            expect(tab.locator("table.figures")).to_have_count(len(result.bots) + 1)
        finally:
            browser.close()
    assert not errors, f"the page threw: {errors}"
    assert not outside, f"the page asked the network: {outside}"
