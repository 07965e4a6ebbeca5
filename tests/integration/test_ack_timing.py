"""Ack timing matches the handlers (issue 14, item 7): a handler slower than the old backoff's
first step (1 s) is delivered once, and a failed delivery is retried after the delay of its
delivery count, not in a hot loop (real NATS, real FastStream)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable

import nats
from faststream.nats.annotations import NatsMessage
from nats.js.api import ConsumerInfo

from shared import streams
from shared.bus import DeadLetters, durable, make_broker, make_router
from shared.streams import INTENTS, Consumer, ensure_streams

Handler = Callable[[NatsMessage, asyncio.Event], Awaitable[None]]


async def consume_one(nats_url: str, name: str, handler: Handler, linger_s: float) -> ConsumerInfo:
    """Publish one intent, consume it with ``handler`` (through the services' router and
    middlewares) until the handler sets its event, keep listening ``linger_s`` longer for a
    redelivery, and return the consumer's info from the server."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    router = make_router(DeadLetters("ack-test"))
    done = asyncio.Event()

    @durable(router, Consumer(INTENTS, name, "tranche.intents.>"))
    async def handle(body: dict, message: NatsMessage) -> None:
        await handler(message, done)

    await js.publish(f"tranche.intents.{name}", json.dumps({"n": 1}).encode())
    broker = make_broker(nats_url, "ack-test")
    broker.include_router(router)
    await broker.start()
    try:
        await asyncio.wait_for(done.wait(), 20)
        await asyncio.sleep(linger_s)
        return await js.consumer_info(INTENTS.name, name)
    finally:
        await broker.stop()
        await nc.close()


async def test_a_handler_taking_three_seconds_is_delivered_once(nats_url: str) -> None:
    deliveries: list[int] = []

    async def slow(message: NatsMessage, done: asyncio.Event) -> None:
        deliveries.append(message.raw_message.metadata.num_delivered)
        await asyncio.sleep(3)
        done.set()

    # A redelivery timed by a 1 s backoff would have come while it ran or in the 2.5 s after.
    info = await consume_one(nats_url, "ack-test-slow", slow, linger_s=2.5)
    assert deliveries == [1]
    assert info.config.ack_wait >= 30
    assert not info.config.backoff


async def test_a_failed_delivery_is_retried_after_its_schedule_delay(nats_url: str) -> None:
    seen: list[float] = []

    async def failing_twice(message: NatsMessage, done: asyncio.Event) -> None:
        seen.append(time.monotonic())
        if len(seen) < 3:
            raise ConnectionError("storage unavailable")
        done.set()

    await consume_one(nats_url, "ack-test-retry", failing_twice, linger_s=0)
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert len(seen) == 3
    assert 0.8 <= gaps[0] < 1.9, gaps  # schedule: 1 s after the first delivery
    assert 1.8 <= gaps[1] < 3.5, gaps  # then 2 s


def test_every_service_consumer_has_a_long_ack_wait_and_no_server_backoff() -> None:
    consumers = [value for value in vars(streams).values() if isinstance(value, Consumer)]
    assert len(consumers) >= 6
    for consumer in consumers:
        config = consumer.config()
        assert config.ack_wait >= 30 and not config.backoff, consumer.durable
