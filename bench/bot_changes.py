"""How fast a bot change reaches the other services.

    python -m bench.bot_changes [COUNT]

Starts a NATS server and the signal service in this process, then creates and pauses COUNT bots
over HTTP (ASGI, no socket) while a second connection follows the ``tranche_bots`` bucket as the
executor and ledger do (:class:`shared.bots.LiveCatalog`). Prints, for each kind of change, the
HTTP answer time (validate, compare-and-set, stage the announcement) and the time until the
follower has applied it. Figures only, no assertion.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import nats

from services.signal.app import build
from services.signal.config import SignalSettings
from shared.bots import LiveCatalog
from shared.catalog import load_catalog
from shared.signing import new_key_pair
from tests.support.nats_server import NatsServer

CONFIG = """
[products.ETH-BTC]
base_min_size = "0.001"
base_increment = "0.00000001"
quote_increment = "0.00000001"
quote_min_size = "0.0001"
"""
BOT = {"product_id": "ETH-BTC", "quote_size": "0.01", "signals": [{"name": "rsi"}]}
TOKEN = {"Authorization": "Bearer bench"}


def summary(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[max(0, round(0.95 * len(ms)) - 1)]
    return (
        f"{name:<28} n={len(ms):<4} median {statistics.median(ms):7.2f} ms   p95 {p95:7.2f} ms"
        f"   max {ms[-1]:7.2f} ms"
    )


async def measure(count: int, work: Path) -> None:
    server = NatsServer(store_dir=work / "nats").start()
    try:
        config = work / "tranche.toml"
        config.write_text(CONFIG)
        settings = SignalSettings(
            database_url=f"sqlite:///{work / 'signal.db'}", nats_url=server.url, data_dir=work,
            config_file=config, control_token="bench", log_level="warning",
            # No executor or safety here: throwaway keys, so the signal starts (it reads order
            # and safety events).
            order_signing_public_key=new_key_pair()[1], signing_public_key=new_key_pair()[1],
        )  # fmt: skip
        service = build(settings)
        await service.start()
        nc = await nats.connect(server.url)
        follower = LiveCatalog(load_catalog(config))
        following = asyncio.create_task(follower.follow(nc))
        transport = httpx.ASGITransport(app=service.http_app())
        answers: dict[str, list[float]] = {"create": [], "pause": []}
        seen: dict[str, list[float]] = {"create": [], "pause": []}
        async with httpx.AsyncClient(transport=transport, base_url="http://signal") as web:
            for n in range(count):
                bot_id = f"bench-{n}"
                for kind in ("create", "pause"):
                    started = time.perf_counter()
                    if kind == "create":
                        body = {"bot_id": bot_id, "config": BOT}
                        response = await web.post("/bots", json=body, headers=TOKEN)
                    else:
                        response = await web.post(f"/bots/{bot_id}/pause", headers=TOKEN)
                    answers[kind].append(time.perf_counter() - started)
                    response.raise_for_status()
                    while not _applied(follower, bot_id, kind):
                        await asyncio.sleep(0.0005)
                    seen[kind].append(time.perf_counter() - started)
        following.cancel()
        await nc.close()
        await service.stop()
    finally:
        server.stop()
    print(f"bot changes over HTTP, {count} bots, one at a time (signal in-process, real NATS)")
    for kind in ("create", "pause"):
        print(summary(f"{kind}: HTTP answer", answers[kind]))
        print(summary(f"{kind}: seen by a follower", seen[kind]))


def _applied(catalog: LiveCatalog, bot_id: str, kind: str) -> bool:
    state = catalog.state(bot_id)
    return state is not None and (kind == "create" or state.paused)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    with tempfile.TemporaryDirectory() as work:
        asyncio.run(measure(count, Path(work)))


if __name__ == "__main__":
    main()
