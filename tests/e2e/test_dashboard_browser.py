"""The dashboard in a real headless browser (Debian's Chromium, driven by Playwright) against the
whole stack as ``tranche up`` starts it: signals injected on NATS show up on the open page as a
position, a rejection with its reason and a moving chart, without a reload; an operator who
entered the safety token halts a bot from the page and sees it halted.

Needs ``/usr/bin/chromium`` (Debian package ``chromium``); the test fails, never skips, without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, Route, expect, sync_playwright

from tests.e2e.conftest import HERE, publish, wait_for
from tests.support.nats_server import free_port
from tranche.stack import ROOT, SERVICES, EmbeddedStack, StackConfig

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
# The flags this machine's notes give for headless Chromium as root on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "dashboard-e2e-operator-token"
BOT = "kill-9"  # from bots.toml: one injected signal confirms; no other test here trades it
OUTPUT = Path(os.environ.get("TRANCHE_TEST_OUTPUT", ROOT / "var" / "test-output"))
T0 = datetime(2018, 1, 22, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    config = StackConfig(
        data_dir=tmp_path_factory.mktemp("dashboard-stack"),
        nats_port=free_port(),
        nats_monitor_port=free_port(),
        ports={name: free_port() for name in SERVICES},
        replay="",
        config_file=HERE / "bots.toml",
        extra_env={"TRANCHE_OUTBOX_POLL_S": "0.5"},
        service_env={
            "safety": {"TRANCHE_CONTROL_TOKEN": TOKEN},
            "dashboard": {"TRANCHE_PUSH_EVERY_S": "0.1", "TRANCHE_HEALTH_EVERY_S": "1"},
        },
    )
    running = EmbeddedStack(config)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def page(stack: EmbeddedStack) -> Iterator[Page]:
    assert Path(CHROMIUM).exists(), "install Debian's chromium: apt-get install -y chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            tab.on("pageerror", lambda error: errors.append(str(error)))
            outside: list[str] = []
            base = stack.config.url("dashboard")
            tab.on(
                "request",
                lambda r: None if r.url.startswith(base) else outside.append(r.url),
            )
            tab.goto(base + "/")
            yield tab
            assert not errors, f"the page threw: {errors}"
            assert not outside, f"the page fetched from elsewhere: {outside}"
        finally:
            browser.close()


def send(stack: EmbeddedStack, subject: str, body: bytes) -> None:
    """`nats pub`, from a thread of its own: Playwright's sync API keeps an event loop running
    in this one."""
    with ThreadPoolExecutor(1) as thread:
        thread.submit(publish, stack.config.admin_url, subject, body).result(timeout=10)


def tick(stack: EmbeddedStack, price: str, at: datetime) -> None:
    body = f'{{"product_id":"ETH-BTC","price":"{price}","time":"{at.isoformat()}"}}'
    send(stack, "tranche.market.ticker.ETH-BTC", body.encode())


def safety_reasons(stack: EmbeddedStack) -> list[str] | None:
    found = httpx.get(f"{stack.config.url('safety')}/decisions?bot={BOT}", timeout=5).json()
    rejected = [d for d in found if not d["approved"]]
    return [r["code"] for r in rejected[0]["reasons"]] if rejected else None


def test_the_page_fills_live_and_an_operator_halts_a_bot(stack: EmbeddedStack, page: Page) -> None:
    page.evaluate("window.__sameDocument = true")  # gone if the page ever reloads
    health = page.locator("#health")
    for name in ("signal", "safety", "executor", "ledger"):
        expect(health.locator(f'[data-service="{name}"].ready')).to_be_visible(timeout=20_000)

    # A price, then a buy: the position appears on the open page, and the fill on the chart.
    tick(stack, "0.0891", T0)
    chart = page.locator('figure.chart[data-product="ETH-BTC"]')
    expect(chart).to_have_attribute("data-last", "0.0891", timeout=10_000)
    send(stack, f"tranche.signals.inject.{BOT}", b'{"side":"buy"}')
    card = page.locator(f"#bot-{BOT}")
    expect(card.locator('.position[data-status="open"]')).to_be_visible(timeout=20_000)
    expect(card.locator(".position")).to_contain_text("0.0891")  # average entry
    expect(card.locator("table.tranches tbody tr")).to_have_count(1)
    expect(chart).to_have_attribute("data-marks", "1", timeout=10_000)
    expect(page.locator(".mode.mock")).to_be_visible()

    # A second buy within the entry cooldown: rejected, and the page says why, as safety did.
    send(stack, f"tranche.signals.inject.{BOT}", b'{"side":"buy"}')
    codes = wait_for(lambda: safety_reasons(stack), what="safety's rejection")
    rejection = card.locator(".last-decision.rejected")
    expect(rejection).to_be_visible(timeout=20_000)
    for code in codes:
        expect(rejection.locator(".reason-code", has_text=code)).to_be_visible()
    expect(page.locator(".decisions .verdict.rejected").first).to_be_visible()
    # Safety's readiness: the bot cannot enter now, says why, and the cooldown timer runs.
    readiness = card.locator(".readiness")
    cooling = readiness.locator('[data-can-enter="no"] .reason-code', has_text="ENTRY_COOLDOWN")
    expect(cooling).to_be_visible(timeout=20_000)
    expect(readiness.locator('[data-cooldown="entry"][data-until]')).to_contain_text("left")
    expect(readiness.locator('[data-can-exit="yes"]')).to_be_visible()

    # The market moves: the chart takes the new point and the unrealized P&L follows.
    points = int(chart.get_attribute("data-points") or 0)
    tick(stack, "0.0950", T0 + timedelta(minutes=1))
    expect(chart).to_have_attribute("data-last", "0.095", timeout=10_000)
    assert int(chart.get_attribute("data-points") or 0) == points + 1
    expect(card.locator(".pnl.gain").first).to_be_visible()

    # Read-only until the operator enters the token; then halt the bot from its card.
    halt = card.locator("button.halt")
    expect(halt).to_be_hidden()
    expect(page.locator("#halt-all")).to_be_hidden()
    page.fill("#token", TOKEN)
    page.click("#use-token")
    expect(page.locator("#token")).to_have_value("")  # the typed token does not stay on screen
    halt.click()
    expect(page.locator("#control-result .ok")).to_contain_text("HALT", timeout=10_000)
    expect(card.locator('[data-state="halted"]')).to_be_visible(timeout=20_000)
    halted = readiness.locator('[data-can-exit="no"] .reason-code', has_text="HALTED")
    expect(halted).to_be_visible(timeout=20_000)
    assert TOKEN not in page.content()

    # A wrong token is refused by safety and said so; nothing changes.
    page.click("#forget-token")
    page.fill("#token", "not-the-token")
    page.click("#use-token")
    card.locator("button.resume").click()
    expect(page.locator("#control-result .refused")).to_contain_text("refused", timeout=10_000)
    expect(card.locator('[data-state="halted"]')).to_be_visible()

    # Everything at once: halt, then resume, with the right token again.
    page.click("#forget-token")
    page.fill("#token", TOKEN)
    page.click("#use-token")
    page.click("#halt-all")
    system = page.locator("#header .system")
    expect(system.locator('[data-state="halted"]')).to_be_visible(timeout=20_000)
    page.click("#resume-all")
    expect(system.locator('[data-state="active"]')).to_be_visible(timeout=20_000)
    expect(card.locator('[data-state="halted"]')).to_be_visible()  # the bot's own halt stays

    assert page.evaluate("window.__sameDocument") is True
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "dashboard.png"), full_page=True)

    # The token went through the dashboard to safety but stayed out of its logs and metrics.
    assert TOKEN not in (stack.logs / "dashboard.log").read_text(errors="replace")
    metrics = httpx.get(stack.config.url("dashboard") + "/metrics", timeout=5).text
    assert TOKEN not in metrics
    assert 'tranche_dashboard_controls_total{command="halt",status="200"} 2.0' in metrics
    position = httpx.get(f"{stack.config.url('ledger')}/positions/{BOT}", timeout=5).json()
    assert Decimal(position["position"]["average_entry_price"]) == Decimal("0.0891")


def test_tranche_status_lists_the_dashboard_beside_the_services(stack: EmbeddedStack) -> None:
    status = subprocess.run(
        [sys.executable, "-m", "tranche", "status", "--json"]
        + [f"--url={name}={stack.config.url(name)}" for name in stack.config.ports],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["views"]["dashboard"]["ready"] is True
    assert set(shown["services"]) == {"signal", "safety", "executor", "ledger"}


def test_every_services_api_docs_render_with_the_network_off(stack: EmbeddedStack) -> None:
    """``/docs`` on every service: Swagger UI from local files (fastapi-offline), with every
    request that leaves the machine refused."""
    assert Path(CHROMIUM).exists(), "install Debian's chromium: apt-get install -y chromium"
    local = f"http://{stack.config.host}:"
    refused: list[str] = []

    def only_local(route: Route) -> None:
        if route.request.url.startswith(local):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.route("**/*", only_local)
            tab = context.new_page()
            for name in stack.config.services:
                tab.goto(stack.config.url(name) + "/docs")
                title = tab.locator(".swagger-ui .info .title")
                title.wait_for(timeout=15_000)
                assert f"Tranche {name}" in title.inner_text()
                assert tab.locator(".opblock").count() > 0, f"{name}: no operation listed"
        finally:
            browser.close()
    assert not refused, f"/docs wanted to fetch from outside: {refused}"
