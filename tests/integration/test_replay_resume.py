"""Event time never goes backwards (issue 15, reproduced 5): the signal service's replay, stopped
and started again on the same database, resumes after the last tick it published; a file with
nothing newer is refused with one sentence."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import nats

from services.signal.app import build
from services.signal.config import SignalSettings
from shared import subjects
from shared.contracts import Ticker
from tests.support.waiting import eventually as until

CONFIG = """
[products.ETH-BTC]
base_min_size = "0.001"
base_increment = "0.00000001"
quote_increment = "0.00000001"
quote_min_size = "0.0001"
"""
T0 = datetime(2018, 1, 20, 12, 0, tzinfo=UTC)


def candles(path: Path, start: datetime, count: int) -> Path:
    rows = ["time,open,high,low,close,volume"]
    for n in range(count):
        at = (start + timedelta(minutes=n)).isoformat()
        rows.append(f"{at},0.09,0.09,0.09,0.09,1")
    path.write_text("\n".join(rows) + "\n")
    return path


async def run_replay(tmp_path: Path, nats_url: str, data: Path) -> tuple[list[Ticker], dict]:
    """Run the signal service until its replay of ``data`` is finished; the tickers it
    published and its feed status."""
    config = tmp_path / "tranche.toml"
    config.write_text(CONFIG)
    settings = SignalSettings(
        database_url=f"sqlite:///{tmp_path / 'signal.db'}", nats_url=nats_url,
        data_dir=tmp_path, config_file=config, replay=f"ETH-BTC={data}", replay_speed=0,
    )  # fmt: skip
    nc = await nats.connect(nats_url)
    seen: list[Ticker] = []

    async def keep(msg) -> None:
        seen.append(Ticker.model_validate_json(msg.data))

    await nc.subscribe(subjects.for_token(subjects.MARKET_TICKER, "ETH-BTC"), cb=keep)
    service = build(settings)
    await service.start()
    transport = httpx.ASGITransport(app=service.http_app())
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://signal") as web:

            async def finished() -> dict | None:
                status = (await web.get("/feeds")).json().get("ETH-BTC")
                return status if status and status["finished"] else None

            status = await until(finished, "the replay to finish")
        await nc.flush()
        await asyncio.sleep(0.2)
    finally:
        await service.stop()
        await nc.close()
    return seen, status


async def test_a_restarted_replay_resumes_after_its_last_tick(tmp_path: Path, nats_url: str):
    data = candles(tmp_path / "eth.csv", T0, 5)
    first, _ = await run_replay(tmp_path, nats_url, data)
    assert [t.time for t in first] == [T0 + timedelta(minutes=n + 1) for n in range(5)]

    data = candles(tmp_path / "eth.csv", T0, 8)  # the file grew while the stack was down
    again, status = await run_replay(tmp_path, nats_url, data)
    assert [t.time for t in again] == [T0 + timedelta(minutes=n + 1) for n in range(5, 8)]
    assert status["resumed_after"] == (T0 + timedelta(minutes=5)).isoformat()


async def test_a_replay_that_would_go_back_in_time_is_refused(tmp_path: Path, nats_url: str):
    await run_replay(tmp_path, nats_url, candles(tmp_path / "new.csv", T0, 3))
    older, status = await run_replay(
        tmp_path, nats_url, candles(tmp_path / "old.csv", T0 - timedelta(days=1), 3)
    )
    assert older == []
    assert status["refused"].startswith("old.csv has no tick after 2018-01-20 12:03:00Z")
    assert "event time never goes backwards" in status["refused"]
