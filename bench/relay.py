"""The baseline: a bare nats-py relay of four JetStream hops with no logic.

The same shape as Tranche's path (inject -> intent -> approval -> order event -> position: five
JetStream publishes, four services in between): a message is published to the first of five
streams, and four relays each pull it from one stream and publish it to the next,
acknowledging after the publish, as the services do. Latency is measured from the
first publish to the arrival on the last subject.
"""

from __future__ import annotations

import asyncio
import time

import nats
from nats.js.api import ConsumerConfig, StorageType, StreamConfig

HOPS = 4
STREAMS = HOPS + 1


async def run_relay(nats_url: str, messages: int) -> list[float]:
    """Latencies in seconds of ``messages`` sent one after the other through the four hops."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    for hop in range(STREAMS):
        await js.add_stream(
            StreamConfig(name=f"RELAY{hop}", subjects=[f"relay.{hop}"], storage=StorageType.FILE)
        )
    relays = []

    async def relay(hop: int) -> None:
        sub = await js.pull_subscribe(
            f"relay.{hop}", durable=f"relay{hop}", config=ConsumerConfig(ack_wait=30)
        )
        while True:
            try:
                batch = await sub.fetch(1, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for msg in batch:
                await js.publish(f"relay.{hop + 1}", msg.data)
                await msg.ack()

    for hop in range(HOPS):
        relays.append(asyncio.create_task(relay(hop)))
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def on_last(msg) -> None:
        arrived.put_nowait(time.perf_counter())

    await nc.subscribe(f"relay.{HOPS}", cb=on_last)
    latencies = []
    for n in range(messages):
        sent = time.perf_counter()
        await js.publish("relay.0", str(n).encode())
        latencies.append(await asyncio.wait_for(arrived.get(), 30) - sent)
    for task in relays:
        task.cancel()
    await asyncio.gather(*relays, return_exceptions=True)
    await nc.close()
    return latencies
