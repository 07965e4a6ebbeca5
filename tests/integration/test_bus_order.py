"""Concurrent consumers keep per-bot order: messages on one subject are handled one after the
other in stream order, while different bots' messages overlap (real NATS, real FastStream)."""

from __future__ import annotations

import asyncio
import json
import random

import nats
from faststream.nats.annotations import NatsMessage

from shared.bus import DeadLetters, durable, make_broker, make_router
from shared.streams import INTENTS, Consumer, ensure_streams

BOTS = ("bot-a", "bot-b", "bot-c", "bot-d")
PER_BOT = 15


async def test_one_bot_at_a_time_in_stream_order_while_bots_overlap(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    router = make_router(DeadLetters("order-test"), concurrency=8)
    seen: dict[str, list[int]] = {bot: [] for bot in BOTS}
    running: dict[str, int] = dict.fromkeys(BOTS, 0)
    overlap = {"bots": 0, "same_bot": 0}
    done = asyncio.Event()
    rng = random.Random(3)

    @durable(router, Consumer(INTENTS, "order-test-v1", "tranche.intents.>"))
    async def handle(body: dict, message: NatsMessage) -> None:
        bot = message.raw_message.subject.rsplit(".", 1)[-1]
        running[bot] += 1
        overlap["same_bot"] = max(overlap["same_bot"], running[bot])
        overlap["bots"] = max(overlap["bots"], sum(1 for n in running.values() if n))
        await asyncio.sleep(rng.uniform(0, 0.02))  # handlers finish out of order
        seen[bot].append(body["n"])
        running[bot] -= 1
        if sum(len(v) for v in seen.values()) == len(BOTS) * PER_BOT:
            done.set()

    for n in range(PER_BOT):
        for bot in BOTS:
            await js.publish(f"tranche.intents.{bot}", json.dumps({"n": n}).encode())
    broker = make_broker(nats_url, "order-test")
    broker.include_router(router)
    await broker.start()
    try:
        await asyncio.wait_for(done.wait(), 60)
    finally:
        await broker.stop()
        await nc.close()
    assert all(seen[bot] == list(range(PER_BOT)) for bot in BOTS), seen
    assert overlap["same_bot"] == 1, "one message at a time per bot"
    assert overlap["bots"] > 1, "different bots' messages must overlap for the test to mean much"
